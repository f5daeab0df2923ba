#!/usr/bin/env node
// The stack's template for the test stand's AWS profile: synthesized with a
// placeholder cluster name (the profile puts each request's cluster in its
// place) and placeholder function code, written to the path given.
import * as fs from 'fs';
import * as path from 'path';
import { App } from 'aws-cdk-lib';
import { WalvaultStack } from '../lib/walvault-stack';

const PLACEHOLDER_CLUSTER = 'iamclusterplaceholder';
const out = process.argv[2];
if (!out) {
  throw new Error('usage: iam-template <output.json>');
}
const app = new App();
const stack = new WalvaultStack(app, 'walvault-iam', {
  clusterName: PLACEHOLDER_CLUSTER,
  lambdaCodeDir: path.join(__dirname, '..', '..', 'test', 'fixtures', 'lambda'),
  replicas: {
    r2: { endpoint: 'https://placeholder.r2.cloudflarestorage.com', bucket: 'placeholder' },
    b2: { endpoint: 'https://s3.eu-central-003.backblazeb2.com', bucket: 'placeholder', region: 'eu-central-003' },
  },
});
const template = app.synth().getStackByName(stack.stackName).template;
fs.writeFileSync(out, JSON.stringify(template, null, 1));
