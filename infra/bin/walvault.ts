#!/usr/bin/env node
// The walvault CDK app: every setting of the stack comes from cdk.json's
// context or `-c key=value` (see the README's deploy guide).
import { App, Duration } from 'aws-cdk-lib';
import { CONTRACT } from '../lib/contract';
import { ReplicaSettings, WalvaultStack } from '../lib/walvault-stack';

const app = new App();
const optional = (key: string): string | undefined => {
  const value = app.node.tryGetContext(key);
  return value === undefined || value === '' ? undefined : String(value);
};
const setting = (key: string): string => {
  const value = optional(key);
  if (value === undefined) {
    throw new Error(`missing setting ${key}: pass -c ${key}=… or set it in cdk.json`);
  }
  return value;
};
const optionalNumber = (key: string): number | undefined => {
  const value = optional(key);
  if (value === undefined) {
    return undefined;
  }
  const number = Number(value);
  if (!Number.isFinite(number)) {
    throw new Error(`setting ${key} must be a number`);
  }
  return number;
};
const seconds = (key: string) => {
  const value = optionalNumber(key);
  return value === undefined ? undefined : Duration.seconds(value);
};

if (optional('stagingExpiryDays') !== undefined) {
  throw new Error(
    'setting stagingExpiryDays was removed: no rule may expire a staging object that is not yet on both replicas; ' +
      'remove it (the OldestStagingAge alarm, stagingAgeAlarmSeconds, reports files waiting too long)',
  );
}
// `r2Endpoint`, `r2Bucket`, `r2Region`, and the same for every provider.
const replicas: Record<string, ReplicaSettings> = {};
for (const provider of CONTRACT.providers) {
  replicas[provider.name] = {
    endpoint: setting(`${provider.name}Endpoint`),
    bucket: setting(`${provider.name}Bucket`),
    region: optional(`${provider.name}Region`),
  };
}

const cluster = setting('clusterName');
new WalvaultStack(app, `walvault-${cluster}`, {
  clusterName: cluster,
  lambdaCodeDir: setting('lambdaCodeDir'),
  replicas,
  compressMemoryMb: optionalNumber('compressMemoryMb'),
  compressTimeout: seconds('compressTimeoutSeconds'),
  compressConcurrency: optionalNumber('compressConcurrency'),
  retentionMemoryMb: optionalNumber('retentionMemoryMb'),
  retentionTimeout: seconds('retentionTimeoutSeconds'),
  zstdLevel: optionalNumber('zstdLevel'),
  retentionDays: optionalNumber('retentionDays'),
  immutableDays: optionalNumber('immutableDays'),
  redriveEvery: seconds('redriveEverySeconds'),
  stagingAgeAlarm: seconds('stagingAgeAlarmSeconds'),
  archivingStalledAfter: seconds('archivingStalledSeconds'),
  // Public age recipients, separated by commas: `-c recipients=age1…,age1…`.
  recipients: optional('recipients')?.split(',').map((r) => r.trim()).filter((r) => r !== ''),
  encryptionOff: optional('encryptionOff') === 'true',
});
