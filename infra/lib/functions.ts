// The two Rust functions, their triggers, and their least-privilege rights:
// compress (fed by the staging queue, and a re-drive schedule) and
// retention (a daily schedule).
import * as path from 'path';
import { Duration, RemovalPolicy } from 'aws-cdk-lib';
import * as events from 'aws-cdk-lib/aws-events';
import * as targets from 'aws-cdk-lib/aws-events-targets';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as kms from 'aws-cdk-lib/aws-kms';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import { SqsEventSource } from 'aws-cdk-lib/aws-lambda-event-sources';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import { Catalog } from './catalog';
import { CONTRACT, layout, requestTimeoutFor, setting } from './contract';
import { ReplicaKeys } from './replica-keys';
import { Staging } from './staging';

/** A replica provider's S3 endpoint settings (credentials live in Secrets Manager). */
export interface ReplicaSettings {
  readonly endpoint: string;
  readonly bucket: string;
  /** B2 needs its region; R2 always signs for `auto`. */
  readonly region?: string;
}

export interface FunctionsProps {
  readonly cluster: string;
  readonly key: kms.IKey;
  readonly staging: Staging;
  readonly catalog: Catalog;
  /** By provider name (`r2`, `b2`), every provider of the contract. */
  readonly replicas: Record<string, ReplicaSettings>;
  /** `cargo lambda build --release --arm64` output: `<dir>/compress/bootstrap`, `<dir>/retention/bootstrap`. */
  readonly lambdaCodeDir: string;
  readonly compressMemoryMb: number;
  readonly compressTimeout: Duration;
  readonly compressConcurrency: number;
  readonly retentionMemoryMb: number;
  readonly retentionTimeout: Duration;
  readonly zstdLevel: number;
  readonly retentionDays: number;
  /** The immutability window set up on the providers (R2 bucket lock, B2 Object Lock), if any. */
  readonly immutableDays?: number;
  readonly redriveEvery: Duration;
  /** Public age recipients new copies are sealed to; none: plain copies. */
  readonly recipients: string[];
  readonly encryptionOff: boolean;
}

/** An age X25519 recipient: `age1` and 58 bech32 characters. */
const AGE_RECIPIENT = /^age1[02-9ac-hj-np-z]{58}$/;

/**
 * WALVAULT_RECIPIENTS or WALVAULT_ENCRYPTION_OFF for the compress function. A
 * private identity given by mistake is refused without being echoed: it must
 * never reach a template.
 */
function encryptionEnvironment(props: FunctionsProps): Record<string, string> {
  props.recipients.forEach((recipient, index) => {
    if (!AGE_RECIPIENT.test(recipient)) {
      const secret = recipient.toUpperCase().startsWith('AGE-SECRET-KEY-');
      throw new Error(
        `recipients[${index}] is not an age recipient (age1…)` +
          (secret ? ': it is a PRIVATE identity, which must stay on the restoring hosts and in the safe; give its public recipient (walvault keygen prints it)' : ''),
      );
    }
  });
  if (props.recipients.length > 0 && props.encryptionOff) {
    throw new Error('encryptionOff cannot be set together with recipients');
  }
  if (props.recipients.length > 0) {
    return { [setting('WALVAULT_RECIPIENTS')]: props.recipients.join(',') };
  }
  return props.encryptionOff ? { [setting('WALVAULT_ENCRYPTION_OFF')]: 'true' } : {};
}

export class Functions extends Construct {
  readonly compress: lambda.Function;
  readonly retention: lambda.Function;
  /** Failed scheduled (asynchronous) invocations land here. */
  readonly deadLetterQueue: sqs.Queue;

  constructor(scope: Construct, id: string, props: FunctionsProps) {
    super(scope, id);
    if (props.immutableDays !== undefined && props.immutableDays >= props.retentionDays) {
      throw new Error('immutableDays must be shorter than retentionDays: the sweep deletes files older than the retention window, which must no longer be locked');
    }
    this.deadLetterQueue = new sqs.Queue(this, 'Dlq', {
      retentionPeriod: Duration.days(14),
      encryption: sqs.QueueEncryption.KMS,
      encryptionMasterKey: props.key,
      enforceSSL: true,
    });
    const compressKeys = new ReplicaKeys(this, 'CompressKeys', { cluster: props.cluster, key: props.key, purpose: 'the compress function (write)' });
    const retentionKeys = new ReplicaKeys(this, 'RetentionKeys', { cluster: props.cluster, key: props.key, purpose: 'the retention function (delete)' });
    const common = commonEnvironment(props);

    this.compress = this.rustFunction('Compress', 'compress', props, {
      memorySize: props.compressMemoryMb,
      reservedConcurrentExecutions: props.compressConcurrency,
      timeout: props.compressTimeout,
      environment: {
        ...common,
        ...compressKeys.environment(),
        [setting('WALVAULT_ZSTD_LEVEL')]: String(props.zstdLevel),
        ...encryptionEnvironment(props),
        [setting('WALVAULT_REQUEST_TIMEOUT_SECS')]: String(requestTimeoutFor('compressTimeout', props.compressTimeout.toSeconds())),
      },
    });
    this.compress.addEventSource(new SqsEventSource(props.staging.queue, { batchSize: 10, reportBatchItemFailures: true }));
    new events.Rule(this, 'Redrive', {
      description: `walvault ${props.cluster}: re-drive stuck staging objects`,
      schedule: events.Schedule.rate(props.redriveEvery),
      targets: [new targets.LambdaFunction(this.compress)],
    });

    this.retention = this.rustFunction('Retention', 'retention', props, {
      memorySize: props.retentionMemoryMb,
      // One sweep at a time.
      reservedConcurrentExecutions: 1,
      timeout: props.retentionTimeout,
      environment: {
        ...common,
        ...retentionKeys.environment(),
        [setting('WALVAULT_RETENTION_DAYS')]: String(props.retentionDays),
        [setting('WALVAULT_REQUEST_TIMEOUT_SECS')]: String(requestTimeoutFor('retentionTimeout', props.retentionTimeout.toSeconds())),
        ...(props.immutableDays === undefined ? {} : { [setting('WALVAULT_IMMUTABLE_DAYS')]: String(props.immutableDays) }),
      },
    });
    new events.Rule(this, 'RetentionSchedule', {
      description: `walvault ${props.cluster}: daily retention sweep`,
      schedule: events.Schedule.cron({ minute: '17', hour: '3' }),
      targets: [new targets.LambdaFunction(this.retention)],
    });

    this.grantCompress(props, compressKeys);
    this.grantRetention(props, retentionKeys);
  }

  /**
   * Compress gets and deletes only its cluster's staging objects, lists the
   * staging bucket (its cluster's alone; without s3:ListBucket a vanished
   * object would read as 403, not 404), creates and updates catalog items,
   * and queries them after each re-drive to keep the status summary.
   */
  private grantCompress(props: FunctionsProps, keys: ReplicaKeys): void {
    const { staging, catalog } = props;
    this.compress.addToRolePolicy(new iam.PolicyStatement({ actions: ['s3:GetObject', 's3:DeleteObject'], resources: [staging.bucket.arnForObjects(`${staging.prefix}*`)] }));
    this.compress.addToRolePolicy(new iam.PolicyStatement({ actions: ['s3:ListBucket'], resources: [staging.bucket.bucketArn] }));
    this.compress.addToRolePolicy(new iam.PolicyStatement({ actions: ['dynamodb:GetItem', 'dynamodb:PutItem', 'dynamodb:UpdateItem', 'dynamodb:Query'], resources: [catalog.table.tableArn] }));
    keys.grantRead(this.compress);
    props.key.grantEncryptDecrypt(this.compress);
  }

  /**
   * Retention reads, queries and deletes catalog items (R2 and B2 are not
   * AWS), and lists and deletes the staged parts of base backups that never
   * finished: the one staging prefix it may touch.
   */
  private grantRetention(props: FunctionsProps, keys: ReplicaKeys): void {
    const backupParts = layout('staging_backup_prefix', props.cluster);
    // UpdateItem: the verify after each sweep records the replicas it repairs.
    this.retention.addToRolePolicy(new iam.PolicyStatement({ actions: ['dynamodb:GetItem', 'dynamodb:Query', 'dynamodb:UpdateItem', 'dynamodb:DeleteItem'], resources: [props.catalog.table.tableArn] }));
    this.retention.addToRolePolicy(new iam.PolicyStatement({ actions: ['s3:DeleteObject'], resources: [props.staging.bucket.arnForObjects(`${backupParts}*`)] }));
    this.retention.addToRolePolicy(new iam.PolicyStatement({
      actions: ['s3:ListBucket'],
      resources: [props.staging.bucket.bucketArn],
      conditions: { StringLike: { 's3:prefix': [`${backupParts}*`] } },
    }));
    keys.grantRead(this.retention);
    props.key.grantEncryptDecrypt(this.retention);
  }

  private rustFunction(id: string, name: string, props: FunctionsProps, options: Partial<lambda.FunctionProps>): lambda.Function {
    const logGroup = new logs.LogGroup(this, `${id}Logs`, {
      retention: logs.RetentionDays.THREE_MONTHS,
      encryptionKey: props.key,
      removalPolicy: RemovalPolicy.RETAIN,
    });
    return new lambda.Function(this, id, {
      ...options,
      runtime: lambda.Runtime.PROVIDED_AL2023,
      architecture: lambda.Architecture.ARM_64,
      handler: 'bootstrap',
      code: lambda.Code.fromAsset(path.join(props.lambdaCodeDir, name)),
      logGroup,
      deadLetterQueue: this.deadLetterQueue,
      environmentEncryption: props.key,
    });
  }
}

/** The settings both functions share: cluster, staging, catalog, and every replica's endpoint. */
function commonEnvironment(props: FunctionsProps): Record<string, string> {
  const env: Record<string, string> = {
    [setting('WALVAULT_CLUSTER')]: props.cluster,
    [setting('WALVAULT_STAGING_BUCKET')]: props.staging.bucket.bucketName,
    [setting('WALVAULT_CATALOG_TABLE')]: props.catalog.table.tableName,
    RUST_LOG: 'info',
  };
  for (const provider of CONTRACT.providers) {
    const replica = props.replicas[provider.name];
    if (!replica) {
      throw new Error(`no settings for the ${provider.name} replica`);
    }
    const p = provider.setting_infix;
    env[setting(`WALVAULT_${p}_ENDPOINT`)] = replica.endpoint;
    env[setting(`WALVAULT_${p}_BUCKET`)] = replica.bucket;
    if (replica.region !== undefined) {
      env[setting(`WALVAULT_${p}_REGION`)] = replica.region;
    }
  }
  return env;
}
