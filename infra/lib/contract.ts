// The names the Rust code and this app must agree on, read from
// contract.json, which the Rust code generates (`make contract`). Every
// metric, setting, key attribute and prefix this app uses goes through
// here: a name the Rust code no longer has fails the synth, and the
// template tests check that every name it does have is used.
import * as fs from 'fs';
import * as path from 'path';

export interface Contract {
  metrics: { namespace: string; dimension: string; names: string[] };
  catalog: { partition_key: string; sort_key: string; attributes: string[]; replica_attributes: string[]; statuses: string[] };
  layout: { staging_prefix: string; staging_backup_prefix: string; identity_key: string; archive_prefix: string };
  providers: { name: string; setting_infix: string }[];
  settings: string[];
  budgets: { answer_margin_secs: number; default_request_timeout_secs: number };
}

export const CONTRACT: Contract = JSON.parse(fs.readFileSync(path.join(__dirname, '..', '..', 'contract.json'), 'utf8'));

function known(kind: string, name: string, names: string[]): string {
  if (!names.includes(name)) {
    throw new Error(`${kind} ${name} is not in contract.json: the Rust code does not have it (run \`make contract\`, then follow the rename here)`);
  }
  return name;
}

/** A metric the functions emit. */
export function metricName(name: string): string {
  return known('metric', name, CONTRACT.metrics.names);
}

/** An environment variable the Rust code reads. */
export function setting(name: string): string {
  return known('setting', name, CONTRACT.settings);
}

/** A layout template (`{cluster}/staging/`) for one cluster. */
export function layout(key: keyof Contract['layout'], cluster: string): string {
  return CONTRACT.layout[key].replace('{cluster}', cluster);
}

/**
 * The per-attempt request timeout for a function that runs at most
 * `timeoutSeconds`: walvault stops its work `answer_margin_secs` before the
 * deadline, and within that work a request must be able to make at least
 * two attempts (a hung first attempt cut off, then a retry). Throws when
 * the timeout is too short for two attempts of five seconds.
 */
export function requestTimeoutFor(functionName: string, timeoutSeconds: number): number {
  const work = timeoutSeconds - CONTRACT.budgets.answer_margin_secs;
  const perAttempt = Math.min(CONTRACT.budgets.default_request_timeout_secs, Math.floor(work / 2));
  if (perAttempt < 5) {
    throw new Error(
      `${functionName}: a ${timeoutSeconds} s timeout leaves ${work} s of work after walvault's ${CONTRACT.budgets.answer_margin_secs} s answer margin, ` +
        'too little for two request attempts of 5 s; raise it',
    );
  }
  return perAttempt;
}
