// The staging buffer: the bucket `walvault push` writes to, and the queue
// its ObjectCreated events reach the compress function through.
import { Duration, RemovalPolicy } from 'aws-cdk-lib';
import * as kms from 'aws-cdk-lib/aws-kms';
import * as s3 from 'aws-cdk-lib/aws-s3';
import * as s3n from 'aws-cdk-lib/aws-s3-notifications';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import { layout } from './contract';

export interface StagingProps {
  readonly cluster: string;
  readonly key: kms.IKey;
  /** The compress function's timeout: the queue's visibility is six times it. */
  readonly compressTimeout: Duration;
}

export class Staging extends Construct {
  readonly bucket: s3.Bucket;
  readonly queue: sqs.Queue;
  readonly deadLetterQueue: sqs.Queue;
  /** `<cluster>/staging/`: where pushed files wait. */
  readonly prefix: string;

  constructor(scope: Construct, id: string, props: StagingProps) {
    super(scope, id);
    this.prefix = layout('staging_prefix', props.cluster);
    this.bucket = new s3.Bucket(this, 'Bucket', {
      encryption: s3.BucketEncryption.S3_MANAGED,
      blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
      enforceSSL: true,
      objectOwnership: s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
      removalPolicy: RemovalPolicy.RETAIN,
      // No expiration rule: a staging object may be the only copy of its
      // bytes (push has returned 0 and PostgreSQL recycled the segment), so
      // only the compress function removes it, once both replicas hold it;
      // the re-drive's OldestStagingAge alarm calls a human while it waits.
      // Unfinished multipart uploads are not objects and hold nothing
      // walvault acknowledged.
      lifecycleRules: [{ id: 'abort-incomplete-uploads', abortIncompleteMultipartUploadAfter: Duration.days(1) }],
    });
    this.deadLetterQueue = new sqs.Queue(this, 'EventsDlq', {
      retentionPeriod: Duration.days(14),
      encryption: sqs.QueueEncryption.KMS,
      encryptionMasterKey: props.key,
      enforceSSL: true,
    });
    this.queue = new sqs.Queue(this, 'Events', {
      // Six times the function timeout, as Lambda recommends for SQS sources.
      visibilityTimeout: Duration.seconds(props.compressTimeout.toSeconds() * 6),
      retentionPeriod: Duration.days(4),
      encryption: sqs.QueueEncryption.KMS,
      encryptionMasterKey: props.key,
      enforceSSL: true,
      deadLetterQueue: { queue: this.deadLetterQueue, maxReceiveCount: 5 },
    });
    this.bucket.addEventNotification(s3.EventType.OBJECT_CREATED, new s3n.SqsDestination(this.queue), { prefix: this.prefix });
  }
}
