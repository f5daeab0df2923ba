// One stack per PostgreSQL cluster, made of constructs named for what they
// hold: the staging buffer, the catalog, the functions (with their keys
// and rights), the host policies, and the alarms.
import { Aspects, CfnResource, Duration, IAspect, Lazy, RemovalPolicy, Stack, StackProps } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as kms from 'aws-cdk-lib/aws-kms';
import { Construct, IConstruct } from 'constructs';
import { Alarms } from './alarms';
import { Catalog } from './catalog';
import { Functions, ReplicaSettings } from './functions';
import { HostPolicies } from './host-policies';
import { Staging } from './staging';

export { ReplicaSettings } from './functions';

export interface WalvaultStackProps extends StackProps {
  /** The PostgreSQL cluster's walvault name (WALVAULT_CLUSTER). */
  readonly clusterName: string;
  /** `cargo lambda build --release --arm64` output: `<dir>/compress/bootstrap`, `<dir>/retention/bootstrap`. */
  readonly lambdaCodeDir: string;
  /** By provider name (`r2`, `b2`): every provider in contract.json. */
  readonly replicas: Record<string, ReplicaSettings>;
  readonly compressMemoryMb?: number;
  readonly compressTimeout?: Duration;
  /** Concurrent compress invocations at most (each handles one SQS batch). */
  readonly compressConcurrency?: number;
  readonly retentionMemoryMb?: number;
  readonly retentionTimeout?: Duration;
  readonly zstdLevel?: number;
  readonly retentionDays?: number;
  /** The immutability window set up on R2 (bucket lock) and B2 (Object Lock); shorter than retentionDays. */
  readonly immutableDays?: number;
  /** How often the compress function re-drives stuck staging objects. */
  readonly redriveEvery?: Duration;
  /** The OldestStagingAge alarm fires when a file has waited in staging longer than this. */
  readonly stagingAgeAlarm?: Duration;
  /** The ArchivingStalled alarm fires when no file was archived for this long; zero turns it off. */
  readonly archivingStalledAfter?: Duration;
  /**
   * Public age recipients (`age1…`) the compress function seals every new copy to
   * (WALVAULT_RECIPIENTS). Public keys only: a private identity is refused.
   */
  readonly recipients?: string[];
  /** Store new copies unsealed although the cluster's copies were sealed (WALVAULT_ENCRYPTION_OFF). */
  readonly encryptionOff?: boolean;
}

export class WalvaultStack extends Stack {
  readonly key: kms.Key;
  readonly staging: Staging;
  readonly catalog: Catalog;
  readonly functions: Functions;
  readonly hostPolicies: HostPolicies;
  readonly alarms: Alarms;

  constructor(scope: Construct, id: string, props: WalvaultStackProps) {
    super(scope, id, props);
    const cluster = props.clusterName;
    const compressTimeout = props.compressTimeout ?? Duration.seconds(60);
    const redriveEvery = props.redriveEvery ?? Duration.minutes(15);
    this.key = this.encryptionKey(cluster);
    this.staging = new Staging(this, 'Staging', {
      cluster,
      key: this.key,
      compressTimeout,
    });
    this.scopeS3KeyGrants(this.key, this.staging.bucket.bucketArn);
    this.catalog = new Catalog(this, 'Catalog', { key: this.key });
    this.functions = new Functions(this, 'Functions', {
      cluster,
      key: this.key,
      staging: this.staging,
      catalog: this.catalog,
      replicas: props.replicas,
      lambdaCodeDir: props.lambdaCodeDir,
      compressMemoryMb: props.compressMemoryMb ?? 256,
      compressTimeout,
      compressConcurrency: props.compressConcurrency ?? 10,
      retentionMemoryMb: props.retentionMemoryMb ?? 256,
      retentionTimeout: props.retentionTimeout ?? Duration.minutes(15),
      zstdLevel: props.zstdLevel ?? 3,
      retentionDays: props.retentionDays ?? 30,
      immutableDays: props.immutableDays,
      redriveEvery,
      recipients: props.recipients ?? [],
      encryptionOff: props.encryptionOff ?? false,
    });
    this.hostPolicies = new HostPolicies(this, 'Hosts', { cluster, key: this.key, staging: this.staging, catalog: this.catalog });
    this.alarms = new Alarms(this, 'Alarms', {
      cluster,
      key: this.key,
      staging: this.staging,
      functions: this.functions,
      stagingAgeAlarm: props.stagingAgeAlarm ?? Duration.hours(1),
      redriveEvery,
      archivingStalledAfter: props.archivingStalledAfter ?? Duration.hours(1),
    });
    Aspects.of(this).add(new CheckovJustifications());
  }

  /**
   * Gives every grant of the key to S3 this bucket as its only possible
   * source. CDK's SQS notification destination adds two: one for sending,
   * conditioned on the bucket's ARN, and one, unconditioned, "since that's
   * how [S3] verifies that the notification destination configuration is
   * valid" (aws-s3-notifications/lib/sqs.ts). S3 carries the bucket as
   * `aws:SourceArn` when it validates a destination queue (sst#5980: an
   * encrypted queue validates with an `aws:SourceArn`-conditioned policy),
   * so the second gets the first's condition, and the account's. Not run
   * against AWS: were it wrong, the deploy would fail at
   * PutBucketNotificationConfiguration ("Unable to validate the following
   * destination configurations"), loudly, never silently.
   */
  private scopeS3KeyGrants(key: kms.Key, bucketArn: string): void {
    const cfnKey = key.node.defaultChild as kms.CfnKey;
    const original = cfnKey.keyPolicy;
    const account = this.account;
    const stack = Stack.of(this);
    cfnKey.keyPolicy = Lazy.any({
      produce: () => {
        const policy = stack.resolve(original) as { Statement: Record<string, unknown>[] };
        for (const statement of policy.Statement) {
          const principal = JSON.stringify(statement.Principal ?? {});
          if (principal.includes('s3.amazonaws.com') && statement.Condition === undefined) {
            statement.Condition = {
              ArnLike: { 'aws:SourceArn': stack.resolve(bucketArn) },
              StringEquals: { 'aws:SourceAccount': stack.resolve(account) },
            };
          }
        }
        return policy;
      },
    });
  }

  /** One rotating customer-managed key for the queues, catalog, secrets, logs, function environments and the alarm topic. */
  private encryptionKey(cluster: string): kms.Key {
    const key = new kms.Key(this, 'Key', {
      description: `walvault ${cluster}`,
      enableKeyRotation: true,
      removalPolicy: RemovalPolicy.RETAIN,
    });
    key.addToResourcePolicy(
      new iam.PolicyStatement({
        principals: [new iam.ServicePrincipal(`logs.${this.region}.amazonaws.com`)],
        actions: ['kms:Encrypt*', 'kms:Decrypt*', 'kms:ReEncrypt*', 'kms:GenerateDataKey*', 'kms:Describe*'],
        resources: ['*'],
        conditions: { ArnLike: { 'kms:EncryptionContext:aws:logs:arn': `arn:${this.partition}:logs:${this.region}:${this.account}:log-group:*` } },
      }),
    );
    key.addToResourcePolicy(
      new iam.PolicyStatement({
        principals: [new iam.ServicePrincipal('cloudwatch.amazonaws.com')],
        actions: ['kms:Decrypt', 'kms:GenerateDataKey*'],
        resources: ['*'],
        // Only this account's alarms (the confused-deputy guard the SNS
        // docs give for CloudWatch publishing to an encrypted topic).
        conditions: {
          StringEquals: { 'aws:SourceAccount': this.account },
          ArnLike: { 'aws:SourceArn': `arn:${this.partition}:cloudwatch:${this.region}:${this.account}:alarm:*` },
        },
      }),
    );
    return key;
  }
}

/**
 * checkov findings that do not apply, each with its reason, recorded as
 * template metadata where checkov reads it.
 */
class CheckovJustifications implements IAspect {
  visit(node: IConstruct): void {
    if (!(node instanceof CfnResource)) {
      return;
    }
    const skips: { id: string; comment: string }[] = [];
    if (node.cfnResourceType === 'AWS::Lambda::Function') {
      skips.push({ id: 'CKV_AWS_117', comment: 'Functions reach R2 and B2 on the internet; a VPC would add NAT cost and no protection' });
      if (node.node.path.includes('BucketNotificationsHandler')) {
        skips.push(
          { id: 'CKV_AWS_115', comment: 'CDK-internal handler run once per deployment' },
          { id: 'CKV_AWS_116', comment: 'CDK-internal handler run once per deployment' },
          { id: 'CKV_AWS_173', comment: 'CDK-internal handler with no environment secrets' },
        );
      }
    }
    if (node.cfnResourceType === 'AWS::S3::Bucket') {
      skips.push(
        { id: 'CKV_AWS_18', comment: 'Transient buffer of immutable objects; audit through CloudTrail data events, not access logs' },
        { id: 'CKV_AWS_21', comment: 'Objects are never overwritten (put-if-absent) and are deleted once replicated: versions would protect nothing' },
      );
    }
    if (skips.length > 0) {
      node.addMetadata('checkov', { skip: skips });
    }
  }
}
