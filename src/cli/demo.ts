// `ecnet demo [up|run|down]`: the seed's walkthrough on `ecnet local`, each step printed with the command it
// runs and that command's real output. `ecnet demo` does all three and always cleans up; a failing step
// says which step and why.
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { Command } from 'commander';
import { localStateDir } from '../config.js';
import { member } from '../local/topology.js';
import { packageRoot } from '../paths.js';
import { EcnetError } from '../errors.js';

const cli = join(packageRoot, 'dist', 'cli', 'main.js');
const examples = join(packageRoot, 'examples');
const SERVER = "require('http').createServer((q, s) => s.end(process.env.HOSTNAME + '\\n')).listen(8080)";

class StepError extends EcnetError<'ECNET_DEMO_STEP'> {
  constructor(message: string) {
    super('ECNET_DEMO_STEP', message);
  }
}

const bold = (s: string) => (process.stdout.isTTY ? `\x1b[1m${s}\x1b[0m` : s);

/** Runs `ecnet ARGS`, printing the command and its output; `expectFail`: the step shows a failing call. */
function ecnet(step: string, args: string[], opts: { show?: string; expectFail?: boolean; quiet?: boolean } = {}): string {
  if (!opts.quiet) process.stdout.write(`$ ${opts.show ?? `ecnet ${args.join(' ')}`}\n`);
  const r = spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8' });
  const out = `${r.stdout}${r.stderr && (r.status !== 0 || !opts.quiet) ? r.stderr : ''}`;
  if (!opts.quiet && out.trim()) process.stdout.write(`${out.trimEnd()}\n`);
  if (r.status !== 0 && !opts.expectFail) throw new StepError(`step "${step}" failed: ecnet ${args.join(' ')} exited ${r.status}: ${r.stderr.trim().split('\n').pop()}`);
  return r.stdout;
}

const curl = (n: number) => ['sh', '-c', `for i in $(seq ${n}); do curl -s -m 2 http://httpbin.httpbin:8080/ || echo "(call failed: curl exit $?)"; done`];

/** Polls `ecnet ARGS` until `done(stdout)`, printing a dot per try (the step's progress), for up to 20 s. */
function waitFor(step: string, what: string, args: string[], done: (out: string) => boolean): void {
  const end = Date.now() + 20_000;
  let dots = false;
  for (;;) {
    if (done(ecnet(step, args, { quiet: true, expectFail: true }))) break;
    if (Date.now() > end) throw new StepError(`step "${step}" failed: no ${what} after 20 s`);
    if (!dots) process.stdout.write(`(waiting for ${what}) `);
    dots = true;
    process.stdout.write('.');
    spawnSync('sleep', ['0.2']);
  }
  if (dots) process.stdout.write('\n');
}

export function demoUp(): void {
  process.stdout.write(`${bold('== 1. the cluster set: control-plane, cluster-1, cluster-2, cluster-3')}\n`);
  ecnet('up', ['local', 'up']);
  // `up` registered the members with Cluster resources; the controller marks each Managed once it has read it.
  waitFor('register', 'every member Managed=True in the control-plane cluster', ['local', 'get', 'clusters', '--cluster', 'control-plane'], (out) => (out.match(/\bTrue\b/g) ?? []).length >= 3);
  ecnet('register', ['local', 'get', 'clusters', '--cluster', 'control-plane']);
  process.stdout.write(`${bold('== 2. httpbin (2 replicas answering with their pod name) in cluster-1 and cluster-3, exported')}\n`);
  for (const c of ['cluster-1', 'cluster-3']) {
    ecnet('deploy', ['local', 'apply', '--cluster', c, '-f', join(examples, 'httpbin-namespace.yaml')]);
    ecnet('deploy', ['local', 'apply', '--cluster', c, '-n', 'httpbin', '-f', join(examples, 'httpbin.yaml')]);
    for (let i = 1; i <= 2; i++) {
      ecnet('deploy', ['local', 'run', '--cluster', c, '--namespace', 'httpbin', '--labels', 'app=pipy', '--name', `httpbin-${c.slice(-1)}-${i}`, '--', 'node', '-e', SERVER], {
        show: `ecnet local run --cluster ${c} --namespace httpbin --labels app=pipy --name httpbin-${c.slice(-1)}-${i} -- node -e '<answer with $HOSTNAME>'`,
      });
    }
  }
  for (const c of ['cluster-1', 'cluster-2', 'cluster-3']) ecnet('export', ['local', 'apply', '--cluster', c, '-n', 'httpbin', '-f', join(examples, 'httpbin-export.yaml')]);
  process.stdout.write(`${bold('== 3. the client in cluster-2')}\n`);
  ecnet('client', ['local', 'apply', '--cluster', 'cluster-2', '-f', join(examples, 'curl.yaml')]);
  ecnet('client', ['local', 'run', '--cluster', 'cluster-2', '--namespace', 'curl', '--labels', 'app=curl', '--name', 'curl', '--', 'sleep', '365d']);
  // The import reaches cluster-2 once the controller has run.
  waitFor('import', 'a ServiceImport with an address in cluster-2', ['local', 'get', 'simp', '-n', 'httpbin', '--cluster', 'cluster-2'], (out) => /ClusterSetIP\s+10\./.test(out));
  ecnet('import', ['local', 'get', 'simp', '-n', 'httpbin', '--cluster', 'cluster-2']);
}

export function demoRun(): void {
  const exec = (n: number) => ['local', 'exec', '--cluster', 'cluster-2', '--pod', 'curl', '--', ...curl(n)];
  const show = (n: number) => `ecnet local exec --cluster cluster-2 --pod curl -- curl -s http://httpbin.httpbin:8080/   (×${n})`;
  process.stdout.write(`${bold('== 4. from cluster-2, before any policy: not found (services of other clusters are not used by default)')}\n`);
  const before = ecnet('no policy', exec(2), { show: show(2) });
  if (!/call failed/.test(before) || /httpbin-/.test(before)) throw new StepError('step "no policy" failed: the call was answered without a policy');
  process.stdout.write(`${bold('== 5. GlobalTrafficPolicy ActiveActive over cluster-1 and cluster-3')}\n`);
  ecnet('active-active', ['local', 'apply', '--cluster', 'cluster-2', '-n', 'httpbin', '-f', join(examples, 'httpbin-gtp-active-active.yaml')]);
  spawnSync('sleep', ['0.5']);
  const aa = ecnet('active-active', exec(8), { show: show(8) });
  if (!/httpbin-1-/.test(aa) || !/httpbin-3-/.test(aa)) throw new StepError('step "active-active" failed: answers did not come from both clusters');
  demoIdentity();
  process.stdout.write(`${bold('== 7. FailOver: cluster-1 first, cluster-3 when cluster-1 is down')}\n`);
  ecnet('failover', ['local', 'apply', '--cluster', 'cluster-2', '-n', 'httpbin', '-f', join(examples, 'httpbin-gtp-failover.yaml')]);
  spawnSync('sleep', ['0.5']);
  const fo = ecnet('failover', exec(4), { show: show(4) });
  if (/httpbin-3-|call failed/.test(fo)) throw new StepError('step "failover" failed: not only cluster-1 answered');
  const pids = (JSON.parse(spawnSync('cat', [join(localStateDir({}), 'set.json')], { encoding: 'utf8' }).stdout) as { pids: Record<string, number> }).pids;
  process.stdout.write(`$ kill <cluster-1's gateway>   (pid ${pids['cluster-1-gateway']})\n`);
  process.kill(pids['cluster-1-gateway']!, 'SIGKILL');
  const after = ecnet('failover', exec(6), { show: show(6) });
  if (/httpbin-1-|call failed/.test(after)) throw new StepError('step "failover" failed: after cluster-1 stopped, not every call was answered by cluster-3');
}

/**
 * Mutual TLS: cluster-3 exports httpbin to cluster-1 only; asked directly with cluster-2's certificate (what
 * cluster-2's node proxy presents), cluster-3's gateway refuses the tunnel and cluster-1's opens it; without a
 * certificate, no gateway opens one.
 */
function demoIdentity(): void {
  process.stdout.write(`${bold("== 6. mutual TLS: a gateway opens tunnels only for member clusters its export allows")}\n`);
  ecnet('identity', ['local', 'apply', '--cluster', 'cluster-3', '-n', 'httpbin', '-f', join(examples, 'httpbin-export-to-cluster-1.yaml')]);
  const id = join(localStateDir({}), 'volumes', 'cluster-2', 'agent', 'ecnet-identity');
  const node = member('cluster-2', 1).nodeNs;
  const ask = (cluster: string, index: number, withCert: boolean): string => {
    const gw = `${member(cluster, index).underlayIp}:80`;
    const cert = withCert ? ['--proxy-cert', join(id, 'tls.crt'), '--proxy-key', join(id, 'tls.key')] : [];
    process.stdout.write(`$ curl -p -x https://${gw} ${withCert ? "--proxy-cert <cluster-2's certificate> " : ''}http://httpbin.httpbin.svc.clusterset.local:8080/   (from cluster-2's node)\n`);
    const r = spawnSync('ip', ['netns', 'exec', node, 'curl', '-s', '-o', '/dev/null', '-m', '3', '-w', '%{http_connect}', '-p', '-x', `https://${gw}`, '--proxy-insecure', ...cert, 'http://httpbin.httpbin.svc.clusterset.local:8080/'], { encoding: 'utf8' });
    const code = r.stdout.trim();
    process.stdout.write(`CONNECT answered ${code}${code === '200' ? ' (tunnel open)' : code === '403' ? ' (refused)' : ''}\n`);
    return code;
  };
  // The gateway's catalog follows the export within its debounce; ask until cluster-3 refuses.
  const end = Date.now() + 10_000;
  let refused = ask('cluster-3', 2, true);
  while (refused !== '403' && Date.now() < end) {
    spawnSync('sleep', ['0.3']);
    refused = ask('cluster-3', 2, true);
  }
  if (refused !== '403') throw new StepError('step "identity" failed: cluster-3\'s gateway did not refuse cluster-2');
  if (ask('cluster-1', 0, true) !== '200') throw new StepError('step "identity" failed: cluster-1\'s gateway did not open a tunnel for cluster-2');
  if (ask('cluster-1', 0, false) !== '403') throw new StepError('step "identity" failed: a tunnel was opened without a certificate');
  ecnet('identity', ['local', 'apply', '--cluster', 'cluster-3', '-n', 'httpbin', '-f', join(examples, 'httpbin-export.yaml')]);
}

export function demoDown(): void {
  process.stdout.write(`${bold('== 8. clean up')}\n`);
  ecnet('down', ['local', 'down']);
}

export function demoCommand(): Command {
  const demo = new Command('demo')
    .description("the seed's walkthrough on a local cluster set: up, run, down (all three when no part is named)")
    .action(() => {
      const started = Date.now();
      try {
        demoUp();
        demoRun();
      } finally {
        demoDown();
      }
      process.stdout.write(`demo done in ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
    });
  demo.command('up').description('the cluster set, the servers, the client and the exports').action(() => demoUp());
  demo.command('run').description('the calls: no policy, ActiveActive, mutual TLS refusing a cluster the export does not allow, FailOver with cluster-1 stopped').action(() => demoRun());
  demo.command('down').description('remove everything').action(() => demoDown());
  return demo;
}
