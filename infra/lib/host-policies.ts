// What the database host may do: `walvault push` and `walvault backup`
// write staging and read the catalog; `walvault fetch`, `restore` and
// `drill` on a recovering host only read (a drill also stores its report
// under the cluster's prefix, with the shipper's policy). Neither can
// delete anything. Catalog reads include Query: restore and drill list the
// backups and the WAL of a timeline, by prefix of the sort key.
//
// `walvault verify --repair` is an operator's, not the database host's:
// it records replicas it copied, so it may update catalog records (never
// delete them, never touch staging); its R2 and B2 write keys come from the
// providers, like the functions'.
//
// Both host policies may list the staging bucket (it is this cluster's alone): without
// s3:ListBucket, S3 answers a GET or HEAD of a missing key with 403, not
// 404 (S3 API reference, GetObject, "Permissions"), and walvault must tell
// "not there" from "refused" — push when it reads a cluster identity not
// yet recorded, fetch at the end of the archive. Granted without an
// s3:prefix condition: whether S3 evaluates one for that check is not
// documented.
import * as iam from 'aws-cdk-lib/aws-iam';
import * as kms from 'aws-cdk-lib/aws-kms';
import { Construct } from 'constructs';
import { Catalog } from './catalog';
import { Staging } from './staging';

export class HostPolicies extends Construct {
  readonly shipper: iam.ManagedPolicy;
  readonly restore: iam.ManagedPolicy;
  readonly repair: iam.ManagedPolicy;

  constructor(scope: Construct, id: string, props: { cluster: string; key: kms.IKey; staging: Staging; catalog: Catalog }) {
    super(scope, id);
    const clusterObjects = props.staging.bucket.arnForObjects(`${props.cluster}/*`);
    const listStaging = new iam.PolicyStatement({ actions: ['s3:ListBucket'], resources: [props.staging.bucket.bucketArn] });
    const readCatalog = new iam.PolicyStatement({ actions: ['dynamodb:GetItem', 'dynamodb:Query'], resources: [props.catalog.table.tableArn] });
    const decrypt = new iam.PolicyStatement({ actions: ['kms:Decrypt'], resources: [props.key.keyArn] });
    this.shipper = new iam.ManagedPolicy(this, 'ShipperPolicy', {
      description: `walvault ${props.cluster}: the database host's walvault push (staging writes, catalog reads)`,
      statements: [
        // HEAD needs s3:GetObject; the identity object lives beside staging/.
        new iam.PolicyStatement({ actions: ['s3:PutObject', 's3:GetObject'], resources: [clusterObjects] }),
        listStaging,
        readCatalog,
        decrypt,
      ],
    });
    this.restore = new iam.ManagedPolicy(this, 'RestorePolicy', {
      description: `walvault ${props.cluster}: walvault fetch on a recovering host (read only)`,
      statements: [new iam.PolicyStatement({ actions: ['s3:GetObject'], resources: [clusterObjects] }), listStaging, readCatalog, decrypt],
    });
    this.repair = new iam.ManagedPolicy(this, 'RepairPolicy', {
      description: `walvault ${props.cluster}: walvault verify --repair by an operator (catalog reads and record updates, no deletes)`,
      statements: [
        new iam.PolicyStatement({ actions: ['dynamodb:GetItem', 'dynamodb:Query', 'dynamodb:UpdateItem'], resources: [props.catalog.table.tableArn] }),
        // The table is encrypted with the stack's key: updates need it both ways.
        new iam.PolicyStatement({ actions: ['kms:Decrypt', 'kms:Encrypt', 'kms:GenerateDataKey*'], resources: [props.key.keyArn] }),
      ],
    });
  }
}
