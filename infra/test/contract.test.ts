// The names shared with the Rust code (contract.json, generated from it)
// against the synthesized template: every metric has an alarm or a graph,
// every function setting is one the Rust code reads, and the catalog key
// schema and staging prefix are the Rust code's. A name changed on one side
// only fails here (or, if the app still names the old one, at synth).
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { CONTRACT, layout, metricName, setting } from '../lib/contract';
import { synth } from './synth';

const template = synth();

function metricNamesUsed(): Set<string> {
  const used = new Set<string>();
  for (const alarm of Object.values(template.findResources('AWS::CloudWatch::Alarm'))) {
    const props = alarm.Properties;
    if (props.Namespace === CONTRACT.metrics.namespace) {
      used.add(props.MetricName);
    }
    for (const query of props.Metrics ?? []) {
      const stat = query.MetricStat?.Metric;
      if (stat?.Namespace === CONTRACT.metrics.namespace) {
        used.add(stat.MetricName);
      }
    }
  }
  for (const dashboard of Object.values(template.findResources('AWS::CloudWatch::Dashboard'))) {
    const body = JSON.stringify(dashboard.Properties.DashboardBody);
    for (const name of CONTRACT.metrics.names) {
      if (body.includes(`\\"${CONTRACT.metrics.namespace}\\",\\"${name}\\"`)) {
        used.add(name);
      }
    }
  }
  return used;
}

test('every metric the functions emit has an alarm or a dashboard graph, under the contract dimension', () => {
  const used = metricNamesUsed();
  const unused = CONTRACT.metrics.names.filter((name) => !used.has(name));
  assert.deepEqual(unused, [], 'metrics nothing watches');
  for (const name of used) {
    assert.ok(CONTRACT.metrics.names.includes(name), `an alarm watches ${name}, which no function emits`);
  }
  for (const alarm of Object.values(template.findResources('AWS::CloudWatch::Alarm'))) {
    if (alarm.Properties.Namespace === CONTRACT.metrics.namespace) {
      assert.deepEqual(alarm.Properties.Dimensions.map((d: { Name: string }) => d.Name), [CONTRACT.metrics.dimension]);
    }
  }
});

test('every WALVAULT_ setting of the functions is one the Rust code reads', () => {
  for (const fn of Object.values(template.findResources('AWS::Lambda::Function'))) {
    const variables = Object.keys(fn.Properties.Environment?.Variables ?? {}).filter((v) => v.startsWith('WALVAULT_'));
    for (const variable of variables) {
      assert.ok(CONTRACT.settings.includes(variable), `${variable} is not read by walvault`);
    }
  }
});

test('the catalog key schema and the staging prefix are the Rust code\'s', () => {
  template.hasResourceProperties('AWS::DynamoDB::Table', {
    KeySchema: [
      { AttributeName: CONTRACT.catalog.partition_key, KeyType: 'HASH' },
      { AttributeName: CONTRACT.catalog.sort_key, KeyType: 'RANGE' },
    ],
  });
  const notifications = JSON.stringify(template.findResources('Custom::S3BucketNotifications'));
  assert.ok(notifications.includes(`"Value":"${layout('staging_prefix', 'orders')}"`), notifications);
});

test('a name the Rust code does not have is refused at synth', () => {
  assert.throws(() => metricName('NoSuchMetric'), /not in contract\.json/);
  assert.throws(() => setting('WALVAULT_NO_SUCH_SETTING'), /not in contract\.json/);
  assert.equal(metricName(CONTRACT.metrics.names[0]), CONTRACT.metrics.names[0]);
});
