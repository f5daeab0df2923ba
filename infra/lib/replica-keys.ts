// One function's keys for every provider, each in its own secret: the
// compress function's keys write, the retention function's delete.
import * as kms from 'aws-cdk-lib/aws-kms';
import * as secrets from 'aws-cdk-lib/aws-secretsmanager';
import { Construct } from 'constructs';
import { CONTRACT, setting } from './contract';

export class ReplicaKeys extends Construct {
  /** By provider name (`r2`, `b2`). */
  readonly secrets: Map<string, secrets.Secret> = new Map();

  constructor(scope: Construct, id: string, props: { cluster: string; key: kms.IKey; purpose: string }) {
    super(scope, id);
    for (const provider of CONTRACT.providers) {
      this.secrets.set(
        provider.name,
        new secrets.Secret(this, provider.setting_infix, {
          description: `walvault ${props.cluster}: ${provider.setting_infix} keys of ${props.purpose}. Replace with {"access_key_id": …, "secret_access_key": …}.`,
          encryptionKey: props.key,
          generateSecretString: {
            secretStringTemplate: JSON.stringify({ access_key_id: 'REPLACE_ME' }),
            generateStringKey: 'secret_access_key',
          },
        }),
      );
    }
  }

  /** `WALVAULT_<P>_SECRET_ARN` for every provider. */
  environment(): Record<string, string> {
    const env: Record<string, string> = {};
    for (const provider of CONTRACT.providers) {
      env[setting(`WALVAULT_${provider.setting_infix}_SECRET_ARN`)] = this.secrets.get(provider.name)!.secretArn;
    }
    return env;
  }

  grantRead(grantee: Parameters<secrets.Secret['grantRead']>[0]): void {
    for (const secret of this.secrets.values()) {
      secret.grantRead(grantee);
    }
  }
}
