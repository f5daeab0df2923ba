#!/usr/bin/env node
// The walvault CDK app: settings come from cdk.json's context or `-c key=value`.
import { App, Duration } from 'aws-cdk-lib';
import { WalvaultStack } from '../lib/walvault-stack';

const app = new App();
const setting = (key: string): string => {
  const value = app.node.tryGetContext(key);
  if (typeof value !== 'string' || value === '') {
    throw new Error(`missing setting ${key}: pass -c ${key}=… or set it in cdk.json`);
  }
  return value;
};
const optionalNumber = (key: string): number | undefined => {
  const value = app.node.tryGetContext(key);
  return value === undefined ? undefined : Number(value);
};

const cluster = setting('clusterName');
const compressTimeout = optionalNumber('compressTimeoutSeconds');
new WalvaultStack(app, `walvault-${cluster}`, {
  clusterName: cluster,
  lambdaCodeDir: setting('lambdaCodeDir'),
  r2: { endpoint: setting('r2Endpoint'), bucket: setting('r2Bucket') },
  b2: { endpoint: setting('b2Endpoint'), bucket: setting('b2Bucket'), region: setting('b2Region') },
  compressMemoryMb: optionalNumber('compressMemoryMb'),
  compressTimeout: compressTimeout === undefined ? undefined : Duration.seconds(compressTimeout),
  retentionMemoryMb: optionalNumber('retentionMemoryMb'),
  zstdLevel: optionalNumber('zstdLevel'),
  retentionDays: optionalNumber('retentionDays'),
});
