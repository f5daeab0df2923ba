// Assertions on the synthesized template: every resource walvault needs,
// its key properties, and least privilege statement by statement.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as path from 'path';
import { spawnSync } from 'child_process';
import { App, Duration } from 'aws-cdk-lib';
import { Match, Template } from 'aws-cdk-lib/assertions';
import { CONTRACT, layout } from '../lib/contract';
import { WalvaultStack } from '../lib/walvault-stack';
import { synth } from './synth';

const template = synth();

type Statement = { Effect: string; Action: string | string[]; Resource: unknown; Principal?: unknown; Condition?: unknown };

/** Every policy statement attached to the role of the function `name` (`Compress`, `Retention`). */
function statementsOf(name: string): Statement[] {
  const roles = template.findResources('AWS::IAM::Role');
  const role = Object.keys(roles).find((id) => id.startsWith(`Functions${name}ServiceRole`));
  assert.ok(role, `no role for ${name}`);
  const policies = template.findResources('AWS::IAM::Policy');
  return Object.values(policies)
    .filter((p) => JSON.stringify(p.Properties.Roles).includes(role!))
    .flatMap((p) => p.Properties.PolicyDocument.Statement as Statement[]);
}

function actions(statements: Statement[]): string[] {
  return statements.flatMap((s) => (Array.isArray(s.Action) ? s.Action : [s.Action]));
}

test('the staging bucket is encrypted, private, TLS-only, and no rule ever expires an object in it', () => {
  template.hasResourceProperties('AWS::S3::Bucket', {
    BucketEncryption: { ServerSideEncryptionConfiguration: [{ ServerSideEncryptionByDefault: { SSEAlgorithm: 'AES256' } }] },
    PublicAccessBlockConfiguration: { BlockPublicAcls: true, BlockPublicPolicy: true, IgnorePublicAcls: true, RestrictPublicBuckets: true },
    LifecycleConfiguration: { Rules: [{ Id: 'abort-incomplete-uploads', AbortIncompleteMultipartUpload: { DaysAfterInitiation: 1 }, Status: 'Enabled' }] },
  });
  // A staging object may be the only copy of a segment PostgreSQL has
  // recycled, and `<cluster>/identity.json` lives there too: no expiry,
  // transition or noncurrent-version rule of any kind, on any bucket.
  for (const bucket of Object.values(template.findResources('AWS::S3::Bucket'))) {
    for (const rule of bucket.Properties.LifecycleConfiguration?.Rules ?? []) {
      const removing = Object.keys(rule).filter((k) => /Expiration|Transition|Noncurrent/.test(k));
      assert.deepEqual(removing, [], `lifecycle rule ${rule.Id} may remove objects`);
    }
  }
  template.hasResourceProperties('AWS::S3::BucketPolicy', {
    PolicyDocument: { Statement: Match.arrayWith([Match.objectLike({ Effect: 'Deny', Condition: { Bool: { 'aws:SecureTransport': 'false' } } })]) },
  });
});

test('object-created events of the cluster reach the queue, which has a DLQ and six times the function timeout', () => {
  template.hasResourceProperties('Custom::S3BucketNotifications', {
    NotificationConfiguration: {
      QueueConfigurations: [Match.objectLike({ Events: ['s3:ObjectCreated:*'], Filter: { Key: { FilterRules: [{ Name: 'prefix', Value: 'orders/staging/' }] } } })],
    },
  });
  template.hasResourceProperties('AWS::SQS::Queue', {
    VisibilityTimeout: 540,
    RedrivePolicy: Match.objectLike({ maxReceiveCount: 5 }),
  });
  // The staging events, their DLQ, and the functions' DLQ for scheduled runs.
  template.resourceCountIs('AWS::SQS::Queue', 3);
  template.resourcePropertiesCountIs('AWS::SQS::Queue', { KmsMasterKeyId: Match.anyValue() }, 3);
});

test('the functions are Rust on provided.al2023 arm64, fed and scheduled', () => {
  template.resourcePropertiesCountIs('AWS::Lambda::Function', { Runtime: 'provided.al2023', Architectures: ['arm64'], Handler: 'bootstrap' }, 2);
  template.hasResourceProperties('AWS::Lambda::Function', {
    Timeout: 90,
    Environment: { Variables: Match.objectLike({ WALVAULT_CLUSTER: 'orders', WALVAULT_ZSTD_LEVEL: '3', WALVAULT_B2_REGION: 'eu-central-003' }) },
  });
  template.hasResourceProperties('AWS::Lambda::Function', {
    Timeout: 900,
    Environment: { Variables: Match.objectLike({ WALVAULT_RETENTION_DAYS: '30' }) },
  });
  template.hasResourceProperties('AWS::Lambda::EventSourceMapping', { BatchSize: 10, FunctionResponseTypes: ['ReportBatchItemFailures'] });
  template.hasResourceProperties('AWS::Events::Rule', { ScheduleExpression: 'rate(15 minutes)' });
  template.hasResourceProperties('AWS::Events::Rule', { ScheduleExpression: 'cron(17 3 * * ? *)' });
});

test('the catalog is on-demand with point-in-time recovery and deletion protection', () => {
  template.hasResourceProperties('AWS::DynamoDB::Table', {
    BillingMode: 'PAY_PER_REQUEST',
    KeySchema: [{ AttributeName: 'cluster', KeyType: 'HASH' }, { AttributeName: 'file_name', KeyType: 'RANGE' }],
    PointInTimeRecoverySpecification: { PointInTimeRecoveryEnabled: true },
    DeletionProtectionEnabled: true,
    SSESpecification: { SSEEnabled: true, SSEType: 'KMS', KMSMasterKeyId: Match.anyValue() },
  });
});

test('one rotating customer-managed key encrypts queues, catalog, secrets, logs, environments and the topic', () => {
  template.resourceCountIs('AWS::KMS::Key', 1);
  template.hasResourceProperties('AWS::KMS::Key', { EnableKeyRotation: true });
  template.resourcePropertiesCountIs('AWS::SecretsManager::Secret', { KmsKeyId: Match.anyValue() }, 4);
  template.resourcePropertiesCountIs('AWS::Logs::LogGroup', { KmsKeyId: Match.anyValue() }, 2);
  template.resourcePropertiesCountIs('AWS::Lambda::Function', { Runtime: 'provided.al2023', KmsKeyArn: Match.anyValue() }, 2);
  template.hasResourceProperties('AWS::SNS::Topic', { KmsMasterKeyId: Match.anyValue() });
});

test('the retention function runs one sweep at a time; compress is bounded', () => {
  template.hasResourceProperties('AWS::Lambda::Function', { Timeout: 900, ReservedConcurrentExecutions: 1 });
  template.hasResourceProperties('AWS::Lambda::Function', { Timeout: 90, ReservedConcurrentExecutions: 10 });
});

test('an immutability window reaches the retention function and must end before retention does', () => {
  const app = new App();
  const props = {
    clusterName: 'locked',
    lambdaCodeDir: path.join(__dirname, '..', '..', 'test', 'fixtures', 'lambda'),
    replicas: {
      r2: { endpoint: 'https://acct.r2.cloudflarestorage.com', bucket: 'wal-r2' },
      b2: { endpoint: 'https://s3.eu-central-003.backblazeb2.com', bucket: 'wal-b2', region: 'eu-central-003' },
    },
  };
  const locked = Template.fromStack(new WalvaultStack(app, 'walvault-locked', { ...props, immutableDays: 7 }));
  locked.hasResourceProperties('AWS::Lambda::Function', {
    Environment: { Variables: Match.objectLike({ WALVAULT_RETENTION_DAYS: '30', WALVAULT_IMMUTABLE_DAYS: '7' }) },
  });
  assert.throws(() => new WalvaultStack(new App(), 'walvault-bad', { ...props, immutableDays: 30 }), /shorter than retentionDays/);
});

test('recipients reach the compress function only, and no private identity reaches the template', () => {
  const props = {
    clusterName: 'sealed',
    lambdaCodeDir: path.join(__dirname, '..', '..', 'test', 'fixtures', 'lambda'),
    replicas: {
      r2: { endpoint: 'https://acct.r2.cloudflarestorage.com', bucket: 'wal-r2' },
      b2: { endpoint: 'https://s3.eu-central-003.backblazeb2.com', bucket: 'wal-b2', region: 'eu-central-003' },
    },
  };
  const ops = 'age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p';
  const escrow = 'age1lggyhqrw2nlhcxprm67z43rta597azn8gknawjehu9d9dl0jq3yqqvfafg';
  const sealed = Template.fromStack(new WalvaultStack(new App(), 'walvault-sealed', { ...props, recipients: [ops, escrow] }));
  const functions = Object.values(sealed.findResources('AWS::Lambda::Function'))
    .map((f) => f.Properties.Environment?.Variables ?? {})
    .filter((env) => env.WALVAULT_CLUSTER === 'sealed');
  const compress = functions.filter((env) => env.WALVAULT_ZSTD_LEVEL !== undefined);
  const others = functions.filter((env) => env.WALVAULT_ZSTD_LEVEL === undefined);
  assert.equal(compress.length, 1);
  assert.equal(compress[0].WALVAULT_RECIPIENTS, `${ops},${escrow}`);
  assert.ok(others.length > 0 && others.every((env) => env.WALVAULT_RECIPIENTS === undefined && env.WALVAULT_IDENTITY_FILE === undefined));
  assert.doesNotMatch(JSON.stringify(sealed.toJSON()), /AGE-SECRET-KEY/i);

  const identity = 'AGE-SECRET-KEY-1GFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPQ4EGAEX';
  assert.throws(
    () => new WalvaultStack(new App(), 'walvault-leak', { ...props, recipients: [ops, identity] }),
    (e: Error) => /recipients\[1\].*PRIVATE identity/.test(e.message) && !e.message.includes('GFPYY'),
  );
  assert.throws(() => new WalvaultStack(new App(), 'walvault-both', { ...props, recipients: [ops], encryptionOff: true }), /cannot be set together/);
  const off = Template.fromStack(new WalvaultStack(new App(), 'walvault-off', { ...props, encryptionOff: true }));
  off.hasResourceProperties('AWS::Lambda::Function', {
    Environment: { Variables: Match.objectLike({ WALVAULT_ENCRYPTION_OFF: 'true' }) },
  });
  const plain = JSON.stringify(template.toJSON());
  assert.ok(!plain.includes('WALVAULT_RECIPIENTS') && !plain.includes('WALVAULT_ENCRYPTION_OFF'));
});

test('four secrets: R2 and B2 keys for each function', () => {
  template.resourceCountIs('AWS::SecretsManager::Secret', 4);
});

test('no statement grants every action or every resource', () => {
  for (const policy of [...Object.values(template.findResources('AWS::IAM::Policy')), ...Object.values(template.findResources('AWS::IAM::ManagedPolicy'))]) {
    for (const statement of policy.Properties.PolicyDocument.Statement as Statement[]) {
      for (const action of actions([statement])) {
        assert.ok(!action.endsWith(':*') && action !== '*', `wildcard action ${action}`);
      }
      assert.notEqual(statement.Resource, '*', `statement ${JSON.stringify(statement)} applies to every resource`);
    }
  }
});

test('the compress role reads and deletes only staging objects and never deletes from the catalog', () => {
  const statements = statementsOf('Compress');
  const catalog = actions(statements.filter((s) => actions([s]).some((a) => a.startsWith('dynamodb:'))));
  assert.deepEqual(catalog.sort(), ['dynamodb:GetItem', 'dynamodb:PutItem', 'dynamodb:Query', 'dynamodb:UpdateItem'], 'Query: the re-drive keeps the status summary');
  const s3Deletes = statements.filter((s) => actions([s]).includes('s3:DeleteObject'));
  assert.equal(s3Deletes.length, 1);
  assert.match(JSON.stringify(s3Deletes[0].Resource), /orders\/staging\/\*/);
  assert.ok(!actions(statements).includes('dynamodb:DeleteItem'));
  assert.ok(!actions(statements).some((a) => a.startsWith('s3:Put')), 'the compress function never writes to staging');
  const list = statements.find((s) => actions([s]).includes('s3:ListBucket'));
  assert.ok(list && !JSON.stringify(list.Resource).includes('/'), 'the staging bucket itself: a vanished object then reads as 404');
});

test('each function reads only its own secrets', () => {
  const secretIds = Object.keys(template.findResources('AWS::SecretsManager::Secret'));
  const readable = (prefix: string) =>
    secretIds.filter((id) => statementsOf(prefix).some((s) => actions([s]).includes('secretsmanager:GetSecretValue') && JSON.stringify(s.Resource).includes(id)));
  assert.deepEqual(readable('Compress').map((id) => id.replace(/[0-9A-F]{8}$/, '')).sort(), ['FunctionsCompressKeysB2', 'FunctionsCompressKeysR2']);
  assert.deepEqual(readable('Retention').map((id) => id.replace(/[0-9A-F]{8}$/, '')).sort(), ['FunctionsRetentionKeysB2', 'FunctionsRetentionKeysR2']);
});

test('the retention role touches the catalog, its secrets, and in staging only the parts of unfinished base backups', () => {
  const statements = statementsOf('Retention');
  assert.ok(actions(statements).includes('dynamodb:DeleteItem'));
  assert.ok(actions(statements).includes('dynamodb:UpdateItem'), 'the verify after the sweep records its repairs, and the sweep the status summary');
  const s3 = statements.filter((s) => actions([s]).some((a) => a.startsWith('s3:')));
  const deletes = s3.filter((s) => actions([s]).includes('s3:DeleteObject'));
  assert.equal(deletes.length, 1);
  assert.ok(JSON.stringify(deletes[0].Resource).includes(layout('staging_backup_prefix', 'orders')), JSON.stringify(deletes[0].Resource));
  const lists = s3.filter((s) => actions([s]).includes('s3:ListBucket'));
  assert.deepEqual(lists.map((s) => s.Condition), [{ StringLike: { 's3:prefix': [`${layout('staging_backup_prefix', 'orders')}*`] } }]);
  assert.deepEqual(actions(s3).sort(), ['s3:DeleteObject', 's3:ListBucket'], 'no reads or writes of WAL in staging');
});

test('the host policies: the shipper writes staging and reads the catalog; restore only reads (Query: restore lists backups and a timeline\'s WAL)', () => {
  const managed = Object.values(template.findResources('AWS::IAM::ManagedPolicy'));
  const byDescription = (word: string) => managed.find((p) => (p.Properties.Description as string).includes(word))!;
  const shipper = actions(byDescription('walvault push').Properties.PolicyDocument.Statement).sort();
  assert.deepEqual(shipper, ['dynamodb:GetItem', 'dynamodb:Query', 'kms:Decrypt', 's3:GetObject', 's3:ListBucket', 's3:PutObject']);
  const restore = actions(byDescription('walvault fetch').Properties.PolicyDocument.Statement).sort();
  assert.deepEqual(restore, ['dynamodb:GetItem', 'dynamodb:Query', 'kms:Decrypt', 's3:GetObject', 's3:ListBucket']);
});

test('the repair policy updates catalog records and deletes nothing, in no store', () => {
  const managed = Object.values(template.findResources('AWS::IAM::ManagedPolicy'));
  const repair = managed.find((p) => (p.Properties.Description as string).includes('verify --repair'))!;
  const granted = actions(repair.Properties.PolicyDocument.Statement).sort();
  assert.deepEqual(granted, ['dynamodb:GetItem', 'dynamodb:Query', 'dynamodb:UpdateItem', 'kms:Decrypt', 'kms:Encrypt', 'kms:GenerateDataKey*']);
  assert.ok(!granted.some((a) => /Delete|^s3:/.test(a)), granted.join(', '));
});

test('hosts may list the staging bucket, so that S3 answers a missing key with 404 and not 403', () => {
  // S3 API reference, GetObject "Permissions": without s3:ListBucket on the
  // bucket, a missing key is 403 AccessDenied. walvault push reads a cluster
  // identity that does not exist yet, and walvault fetch probes past the end
  // of the archive: both must see "not found" to work at all.
  const hosts = Object.values(template.findResources('AWS::IAM::ManagedPolicy')).filter((p) => !(p.Properties.Description as string).includes('verify --repair'));
  assert.equal(hosts.length, 2);
  for (const policy of hosts) {
    const statements = policy.Properties.PolicyDocument.Statement as Statement[];
    const list = statements.find((s) => actions([s]).includes('s3:ListBucket'));
    assert.ok(list, `${policy.Properties.Description} cannot list staging`);
    assert.equal(list!.Condition, undefined, 'no s3:prefix condition: S3 may not evaluate one for this check');
    assert.match(JSON.stringify(list!.Resource), /Staging/);
  }
});

test('alarms go to one SNS topic, and a dashboard shows the metrics', () => {
  const alarms = Object.values(template.findResources('AWS::CloudWatch::Alarm'));
  assert.equal(alarms.length, 17);
  for (const alarm of alarms) {
    assert.equal(alarm.Properties.AlarmActions.length, 1);
  }
  const metricNames = alarms.map((a) => a.Properties.MetricName).filter(Boolean);
  for (const name of ['ApproximateNumberOfMessagesVisible', 'ApproximateAgeOfOldestMessage', 'Errors', 'Throttles', 'ReplicationLag', 'Conflicts', 'CorruptInputs', 'VanishedFiles', 'OldestStagingAge', 'RetentionErrors', 'RetentionNoBaseBackup', 'VerifyProblems']) {
    assert.ok(metricNames.includes(name), `no alarm on ${name}`);
  }
  template.resourceCountIs('AWS::SNS::Topic', 1);
  template.resourceCountIs('AWS::CloudWatch::Dashboard', 1);
});

test('both dead-letter queues page: staging events and failed scheduled runs', () => {
  const queues = template.findResources('AWS::SQS::Queue');
  const dlqs = Object.keys(queues).filter((id) => /Dlq/.test(id));
  assert.equal(dlqs.length, 2, dlqs.join(', '));
  const alarms = Object.values(template.findResources('AWS::CloudWatch::Alarm'));
  for (const dlq of dlqs) {
    assert.ok(
      alarms.some((a) => a.Properties.MetricName === 'ApproximateNumberOfMessagesVisible' && JSON.stringify(a.Properties.Dimensions).includes(dlq)),
      `no alarm on ${dlq}`,
    );
  }
});

test('a file waiting in staging over an hour pages, and so does a re-drive that stopped reporting', () => {
  template.hasResourceProperties('AWS::CloudWatch::Alarm', {
    MetricName: 'OldestStagingAge',
    Statistic: 'Maximum',
    Threshold: 3600 * 1000,
    Period: 1800,
    TreatMissingData: 'breaching',
  });
  template.hasResourceProperties('AWS::CloudWatch::Alarm', { MetricName: 'VanishedFiles', Statistic: 'Sum', Threshold: 0 });
});

test('the key lets CloudWatch publish alarms only for this account', () => {
  const keys = Object.values(template.findResources('AWS::KMS::Key'));
  const statements = keys.flatMap((k) => k.Properties.KeyPolicy.Statement as Statement[]);
  const cloudwatch = statements.filter((s) => JSON.stringify(s).includes('cloudwatch.amazonaws.com'));
  assert.equal(cloudwatch.length, 1);
  const condition = JSON.stringify(cloudwatch[0].Condition);
  assert.ok(condition.includes('aws:SourceAccount') && condition.includes(':alarm:*'), condition);
});

test('every grant of the key to a service names its source: S3 only for the staging bucket of this account', () => {
  const keys = Object.values(template.findResources('AWS::KMS::Key'));
  const statements = keys.flatMap((k) => k.Properties.KeyPolicy.Statement as Statement[]);
  const services = statements.filter((s) => JSON.stringify(s.Principal ?? {}).includes('Service'));
  assert.ok(services.length >= 4, `${services.length} service grants`);
  for (const statement of services) {
    assert.ok(statement.Condition !== undefined, JSON.stringify(statement));
  }
  const s3 = services.filter((s) => JSON.stringify(s.Principal).includes('s3.amazonaws.com'));
  assert.equal(s3.length, 2);
  for (const statement of s3) {
    const condition = JSON.stringify(statement.Condition);
    assert.ok(condition.includes('aws:SourceArn') && condition.includes('StagingBucket'), condition);
  }
});

test('no file archived for an hour pages (push failing on the host), unless turned off', () => {
  template.hasResourceProperties('AWS::CloudWatch::Alarm', {
    MetricName: 'FilesArchived',
    Statistic: 'Sum',
    Period: 3600,
    Threshold: 1,
    ComparisonOperator: 'LessThanThreshold',
    TreatMissingData: 'breaching',
  });
  const app = new App();
  const quiet = new WalvaultStack(app, 'walvault-quiet', {
    clusterName: 'orders',
    lambdaCodeDir: path.join(__dirname, '..', '..', 'test', 'fixtures', 'lambda'),
    replicas: {
      r2: { endpoint: 'https://acct.r2.cloudflarestorage.com', bucket: 'wal-r2' },
      b2: { endpoint: 'https://s3.eu-central-003.backblazeb2.com', bucket: 'wal-b2', region: 'eu-central-003' },
    },
    archivingStalledAfter: Duration.seconds(0),
  });
  const alarms = Object.values(Template.fromStack(quiet).findResources('AWS::CloudWatch::Alarm'));
  assert.ok(!alarms.some((a) => a.Properties.MetricName === 'FilesArchived'));
});

test('the removed stagingExpiryDays setting is refused with the reason, not ignored', () => {
  const run = spawnSync(process.execPath, [path.join(__dirname, '..', 'bin', 'walvault.js')], {
    env: { ...process.env, CDK_CONTEXT_JSON: JSON.stringify({ stagingExpiryDays: '14' }) },
    encoding: 'utf8',
  });
  assert.notEqual(run.status, 0);
  assert.match(run.stderr, /stagingExpiryDays was removed: no rule may expire a staging object/);
});

test("the functions' timeouts, the queue's visibility and walvault's request budgets agree", () => {
  const stackWith = (compressTimeout: number) =>
    new WalvaultStack(new App(), 'walvault-budgets', {
      clusterName: 'orders',
      lambdaCodeDir: path.join(__dirname, '..', '..', 'test', 'fixtures', 'lambda'),
      replicas: {
        r2: { endpoint: 'https://acct.r2.cloudflarestorage.com', bucket: 'wal-r2' },
        b2: { endpoint: 'https://s3.eu-central-003.backblazeb2.com', bucket: 'wal-b2', region: 'eu-central-003' },
      },
      compressTimeout: Duration.seconds(compressTimeout),
    });
  const margin = CONTRACT.budgets.answer_margin_secs;
  for (const timeout of [90, 60, 30, 20]) {
    const t = Template.fromStack(stackWith(timeout));
    const functions = Object.values(t.findResources('AWS::Lambda::Function', { Properties: { Runtime: 'provided.al2023' } }));
    assert.equal(functions.length, 2);
    for (const fn of functions) {
      const seconds = fn.Properties.Timeout as number;
      const perAttempt = Number(fn.Properties.Environment.Variables.WALVAULT_REQUEST_TIMEOUT_SECS);
      // Two attempts fit in the work walvault does before its answer margin.
      assert.ok(2 * perAttempt <= seconds - margin, `${seconds} s function, ${perAttempt} s attempts`);
      assert.ok(perAttempt >= 5 && perAttempt <= CONTRACT.budgets.default_request_timeout_secs);
    }
    // SQS redelivers a batch only after the function surely ended.
    t.hasResourceProperties('AWS::SQS::Queue', { VisibilityTimeout: 6 * timeout });
  }
  assert.throws(() => stackWith(15), /compressTimeout: a 15 s timeout leaves 5 s of work/);
});
