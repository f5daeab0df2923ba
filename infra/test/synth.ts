// The stack the template tests look at, with placeholder function code.
import * as path from 'path';
import { App, Duration } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import { WalvaultStack } from '../lib/walvault-stack';

const fixtures = path.join(__dirname, '..', '..', 'test', 'fixtures', 'lambda');

export function synth(): Template {
  const app = new App();
  const stack = new WalvaultStack(app, 'walvault-test', {
    clusterName: 'orders',
    lambdaCodeDir: fixtures,
    replicas: {
      r2: { endpoint: 'https://acct.r2.cloudflarestorage.com', bucket: 'wal-r2' },
      b2: { endpoint: 'https://s3.eu-central-003.backblazeb2.com', bucket: 'wal-b2', region: 'eu-central-003' },
    },
    compressTimeout: Duration.seconds(90),
  });
  return Template.fromStack(stack);
}

