// Alarms to one SNS topic, and a dashboard, on the queue, the functions,
// and the functions' EMF metrics (names from contract.json).
import { Duration } from 'aws-cdk-lib';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as actions from 'aws-cdk-lib/aws-cloudwatch-actions';
import * as kms from 'aws-cdk-lib/aws-kms';
import * as sns from 'aws-cdk-lib/aws-sns';
import { Construct } from 'constructs';
import { CONTRACT, metricName } from './contract';
import { Functions } from './functions';
import { Staging } from './staging';

export class Alarms extends Construct {
  readonly topic: sns.Topic;
  private readonly cluster: string;

  constructor(
    scope: Construct,
    id: string,
    props: {
      cluster: string;
      key: kms.IKey;
      staging: Staging;
      functions: Functions;
      stagingAgeAlarm: Duration;
      redriveEvery: Duration;
      /** Zero: no alarm. */
      archivingStalledAfter: Duration;
    },
  ) {
    super(scope, id);
    this.cluster = props.cluster;
    this.topic = new sns.Topic(this, 'Topic', { displayName: `walvault ${props.cluster} alarms`, enforceSSL: true, masterKey: props.key });
    const { staging, functions } = props;
    const emf = (name: string, statistic: string, period?: Duration) => this.emf(name, statistic, period);
    this.alarm('DlqNotEmpty', staging.deadLetterQueue.metricApproximateNumberOfMessagesVisible(), 0, 'messages in the dead-letter queue');
    // Scheduled runs (re-drive, retention) that failed every retry Lambda gives them.
    this.alarm(
      'FunctionsDlqNotEmpty',
      functions.deadLetterQueue.metricApproximateNumberOfMessagesVisible(),
      0,
      'a scheduled run (re-drive or retention) failed all its retries',
    );
    this.alarm('OldestQueuedMessage', staging.queue.metricApproximateAgeOfOldestMessage(), 1800, 'staging events waiting over 30 minutes');
    this.alarm('CompressErrors', functions.compress.metricErrors(), 0, 'compress function errors');
    this.alarm('CompressThrottles', functions.compress.metricThrottles(), 0, 'compress function throttled');
    this.alarm('RetentionErrors', functions.retention.metricErrors(), 0, 'retention function errors');
    this.alarm('RetentionThrottles', functions.retention.metricThrottles(), 0, 'retention function throttled');
    this.alarm('ReplicationLag', emf('ReplicationLag', 'Maximum'), 15 * 60 * 1000, 'a file took over 15 minutes to reach both replicas');
    this.alarm('Conflicts', emf('Conflicts', 'Sum'), 0, 'different content under an archived name');
    this.alarm('CorruptInputs', emf('CorruptInputs', 'Sum'), 0, 'a staging object failed verification');
    this.alarm('VanishedFiles', emf('VanishedFiles', 'Sum'), 0, 'a staging object disappeared before it was replicated');
    // The re-drive reports the backlog on every run: a period with no
    // report (two re-drive intervals, at least 30 minutes) means it stopped
    // looking, which is as bad as a backlog.
    const backlogPeriod = Math.ceil(Math.max(1800, 2 * props.redriveEvery.toSeconds()) / 60) * 60;
    this.alarm(
      'OldestStagingAge',
      emf('OldestStagingAge', 'Maximum', Duration.seconds(backlogPeriod)),
      props.stagingAgeAlarm.toMilliseconds(),
      `a file has waited in staging over ${props.stagingAgeAlarm.toHumanString()}: replication is failing`,
      cloudwatch.TreatMissingData.BREACHING,
    );
    this.alarm(
      'ReplicaFailures',
      new cloudwatch.MathExpression({
        expression: 'r2 + b2',
        usingMetrics: { r2: emf('R2Failures', 'Sum'), b2: emf('B2Failures', 'Sum') },
        period: Duration.minutes(15),
      }),
      10,
      'replica writes failing',
    );
    // PostgreSQL archives at least every archive_timeout while the cluster
    // has any activity; no file archived for this long means push is
    // failing on the host (whose only other trace is PostgreSQL's log) or
    // nothing reaches the pipeline. A cluster idle for that long pages too.
    if (props.archivingStalledAfter.toSeconds() > 0) {
      this.alarm(
        'ArchivingStalled',
        emf('FilesArchived', 'Sum', props.archivingStalledAfter),
        1,
        `no file archived for ${props.archivingStalledAfter.toHumanString()}`,
        cloudwatch.TreatMissingData.BREACHING,
        cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
      );
    }
    this.alarm('RetentionSweepErrors', emf('RetentionErrors', 'Sum'), 0, 'retention sweep errors');
    this.alarm('RetentionNoBaseBackup', emf('RetentionNoBaseBackup', 'Maximum'), 0, 'no base backup known: retention deletes nothing (or by age alone, if WALVAULT_RETENTION_AGE_ONLY chose it)');
    this.alarm('VerifyProblems', emf('VerifyProblems', 'Maximum'), 0, 'the verify after the sweep found copies missing or damaged that it could not repair, orphans, or WAL breaks: run walvault verify');
    this.dashboard(staging);
  }

  /** One of the functions' EMF metrics, by its name in the contract. */
  private emf(name: string, statistic: string, period: Duration = Duration.minutes(5)): cloudwatch.Metric {
    return new cloudwatch.Metric({
      namespace: CONTRACT.metrics.namespace,
      metricName: metricName(name),
      dimensionsMap: { [CONTRACT.metrics.dimension]: this.cluster },
      statistic,
      period,
    });
  }

  private alarm(
    id: string,
    metric: cloudwatch.IMetric,
    threshold: number,
    description: string,
    treatMissingData = cloudwatch.TreatMissingData.NOT_BREACHING,
    comparisonOperator = cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
  ): cloudwatch.Alarm {
    const alarm = new cloudwatch.Alarm(this, id, {
      metric,
      threshold,
      evaluationPeriods: 1,
      comparisonOperator,
      treatMissingData,
      alarmDescription: `walvault ${this.cluster}: ${description}`,
    });
    alarm.addAlarmAction(new actions.SnsAction(this.topic));
    return alarm;
  }

  private dashboard(staging: Staging): void {
    const emf = (name: string, statistic: string) => this.emf(name, statistic);
    new cloudwatch.Dashboard(this, 'Dashboard', {
      dashboardName: `walvault-${this.cluster}`,
      widgets: [
        [
          new cloudwatch.GraphWidget({ title: 'Files archived', left: [emf('FilesArchived', 'Sum')] }),
          new cloudwatch.GraphWidget({ title: 'Bytes: raw and compressed', left: [emf('RawBytes', 'Sum'), emf('CompressedBytes', 'Sum')] }),
          new cloudwatch.GraphWidget({ title: 'Replication lag (ms)', left: [emf('ReplicationLag', 'Maximum'), emf('ReplicationLag', 'Average')] }),
        ],
        [
          new cloudwatch.GraphWidget({ title: 'Replica failures', left: [emf('R2Failures', 'Sum'), emf('B2Failures', 'Sum')] }),
          new cloudwatch.GraphWidget({ title: 'Conflicts and corrupt inputs', left: [emf('Conflicts', 'Sum'), emf('CorruptInputs', 'Sum')] }),
          new cloudwatch.GraphWidget({ title: 'Queue', left: [staging.queue.metricApproximateAgeOfOldestMessage(), staging.deadLetterQueue.metricApproximateNumberOfMessagesVisible()] }),
        ],
        [
          new cloudwatch.GraphWidget({
            title: 'Staging: files waiting, and the oldest one (ms)',
            left: [emf('StagingBacklog', 'Maximum'), emf('VanishedFiles', 'Sum')],
            right: [emf('OldestStagingAge', 'Maximum')],
          }),
          new cloudwatch.GraphWidget({
            title: 'Retention',
            left: [emf('RetentionDeleted', 'Sum'), emf('RetentionErrors', 'Sum'), emf('RetentionNoBaseBackup', 'Maximum')],
            right: [emf('RetentionBytesFreed', 'Sum')],
          }),
          new cloudwatch.GraphWidget({
            title: 'Verify after the sweep',
            left: [emf('VerifyProblems', 'Maximum'), emf('VerifyRepaired', 'Sum'), emf('VerifyUnchecked', 'Maximum')],
          }),
        ],
      ],
    });
  }
}
