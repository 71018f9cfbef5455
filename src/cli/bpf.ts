// `ecnet bpf …`: load/unload the datapath, show what is in the kernel, program a redirect by hand.
import net from 'node:net';
import { Command } from 'commander';
import { formatEndpoint, parseServiceAddress } from '../net/address.js';
import type { OriginalDestination } from '../bpf/codecs.js';
import { Datapath, type DatapathStatus, type DumpRow, type MapDump } from '../bpf/datapath.js';
import { DatapathError } from '../bpf/errors.js';
import { MAP_NAMES } from '../bpf/loader.js';
import { type DatapathConfig, type DatapathFlags, type ListenFlags, type LoadFlags, agentDefaults, datapathConfig, defaults, listenConfig, loadConfig, serviceIdFlag } from '../config.js';
import { componentLogger, type Logger } from '../logger.js';
// Made when used: the CLI sets the log level after this module loads.
const log = (): Logger => componentLogger('cli');
import { type ServiceName, type ServiceNames, fetchRoutes, formatServiceName, serviceNames } from './service-names.js';
import { table } from './table.js';

/** The maps whose entries are for a service (ecnet_stats' are counters). */
const NAMED_MAPS: ReadonlySet<string> = new Set([MAP_NAMES.services, MAP_NAMES.sockets, MAP_NAMES.connections]);

function out(text: string): void {
  process.stdout.write(`${text}\n`);
}

function json(value: unknown): string {
  return JSON.stringify(value, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v), 2);
}

function requireCgroup(cfg: DatapathConfig): string {
  if (!cfg.cgroup) throw new DatapathError('ECNET_NO_CGROUP2', 'no cgroup v2 hierarchy is mounted and --cgroup was not given');
  return cfg.cgroup;
}

const hex = (n: number): string => `0x${n.toString(16)}`;
const dst = (d: OriginalDestination): string => `${formatEndpoint(d)}/${d.protocol}`;

function renderStatus(s: DatapathStatus): string {
  const lines = [
    `datapath  ${s.bpffs}   kernel ${s.kernel}   libbpf ${s.libbpf}`,
    s.settings
      ? `proxy     ${formatEndpoint(s.settings.proxy)}${s.settings.proxyIp6 ? `  [${s.settings.proxyIp6}]` : ''}   skip mark ${hex(s.settings.proxyMark)}`
      : 'proxy     (connect programs not attached)',
    '',
    table(
      ['PROGRAM', 'HOOK', 'CGROUP', 'LINK', 'PROG', 'TAG'],
      s.programs.map((p) => [p.name, p.hook, p.cgroup ?? `id ${p.cgroupId}`, p.linkId, p.progId, p.tag]),
    ),
    '',
    table(
      ['MAP', 'TYPE', 'ENTRIES', 'CAPACITY', 'FILL', 'PIN'],
      s.maps.map((m) => [m.name, m.type, m.entries, m.capacity, `${((100 * m.entries) / m.capacity).toFixed(1)}%`, m.pin]),
    ),
    '',
    table(['COUNTER', 'TOTAL'], Object.entries(s.stats).map(([k, v]) => [k, v])),
  ];
  return lines.join('\n');
}

/** The service an entry of ecnet_services, ecnet_sock_dst or ecnet_conn_dst is for (others: none). */
function serviceOf(map: string, row: DumpRow, names: ServiceNames | undefined): ServiceName | undefined {
  if (!names) return undefined;
  const { key, value } = row as { key: Record<string, unknown>; value: Record<string, unknown> };
  switch (map) {
    case MAP_NAMES.services:
      return names.of(String(key.ip), Number(key.port), Number(value.id));
    case MAP_NAMES.sockets: {
      const v = value as unknown as OriginalDestination;
      return names.of(v.ip, v.port, v.serviceId);
    }
    case MAP_NAMES.connections: {
      const v = (value as unknown as { dst: OriginalDestination }).dst;
      return names.of(v.ip, v.port, v.serviceId);
    }
    default:
      return undefined;
  }
}

function renderDump(d: MapDump, names: ServiceNames | undefined): string {
  const rows = d.rows as { key: Record<string, unknown>; value: Record<string, unknown> }[];
  const service = (row: DumpRow) => formatServiceName(serviceOf(d.map, row, names));
  switch (d.map) {
    case MAP_NAMES.services:
      return table(
        ['ADDRESS', 'PROTO', 'ID', 'SERVICE', 'FLAGS'],
        rows.map((row) => [
          formatEndpoint(row.key as never),
          String(row.key.protocol),
          Number(row.value.id),
          service(row),
          row.value.disabled ? 'disabled' : '-',
        ]),
      );
    case MAP_NAMES.sockets:
      return table(
        ['COOKIE', 'ORIGINAL-DST', 'SVC-ID', 'SERVICE', 'FLAGS'],
        rows.map((row) => {
          const v = row.value as unknown as OriginalDestination;
          return [String(row.key.cookie), dst(v), v.serviceId, service(row), v.v6Socket ? 'v6-socket' : '-'];
        }),
      );
    case MAP_NAMES.connections:
      // AGE: since sockops recorded it; past the bound the proxy ignores it and the agent sweeps it.
      return table(
        ['CLIENT', 'PROXY', 'ORIGINAL-DST', 'SVC-ID', 'SERVICE', 'FLAGS', 'AGE'],
        rows.map((row) => {
          const { dst: v, ageMs } = row.value as unknown as { dst: OriginalDestination; ageMs: number };
          const k = row.key as unknown as { client: never; proxy: never };
          const age = `${(ageMs / 1000).toFixed(1)}s${ageMs > defaults.connRecordMaxAgeMs ? ' (stale)' : ''}`;
          return [formatEndpoint(k.client), formatEndpoint(k.proxy), dst(v), v.serviceId, service(row), v.v6Socket ? 'v6-socket' : '-', age];
        }),
      );
    default:
      return table(['COUNTER', 'TOTAL'], rows.map(({ key, value }) => [String(key.counter), Number(value.total)]));
  }
}

/** Runs `fn` with a handle on the loaded datapath, closing it afterwards. */
function withDatapath<T>(cfg: DatapathConfig, fn: (dp: Datapath) => T): T {
  const dp = Datapath.openPinned(cfg.bpffs, log());
  try {
    return fn(dp);
  } finally {
    dp.close();
  }
}

/**
 * Accepts connections at `proxy` and answers each (as a small HTTP response, so curl shows it) with the
 * original destination it takes from the datapath, and prints one line per connection.
 */
function serveOriginalDestinations(dp: Datapath, proxy: { ip: string; port: number }, count: number | undefined, asJson: boolean): Promise<void> {
  return new Promise((resolve, reject) => {
    let seen = 0;
    const server = net.createServer((sock) => {
      sock.on('error', () => {});
      // Reset by the client before we accepted it: Node knows no addresses; nothing to answer.
      if (!sock.remoteAddress) return void sock.destroy();
      const client = `${sock.remoteAddress}:${sock.remotePort}`;
      const d = dp.takeOriginalDestination(sock);
      const line = d
        ? `${client} -> ${dst(d)} (service id ${d.serviceId}): redirected by the datapath`
        : `${client}: no original destination recorded (connected to the proxy address directly?)`;
      out(asJson ? JSON.stringify({ client, originalDestination: d ?? null }) : line);
      const answer = () => {
        sock.end(`HTTP/1.0 200 OK\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\n${line}\n`);
      };
      // Reply once the client has spoken (HTTP), or soon anyway for server-first protocols.
      const timer = setTimeout(answer, 200);
      sock.once('data', () => {
        clearTimeout(timer);
        answer();
      });
      sock.once('close', () => clearTimeout(timer));
      if (count !== undefined && ++seen >= count) server.close();
    });
    const stop = () => server.close();
    process.once('SIGINT', stop).once('SIGTERM', stop);
    server.once('error', reject);
    server.once('close', () => {
      process.off('SIGINT', stop).off('SIGTERM', stop);
      resolve();
    });
    server.listen(proxy.port, proxy.ip, () => componentLogger('cli').info({ proxy }, 'listening'));
  });
}

/** `ecnet bpf unload`, also `ecnet uninstall`. */
export function unload(cfg: DatapathConfig): void {
  const r = Datapath.uninstall(cfg.bpffs, log());
  if (cfg.output === 'json') out(json(r));
  else out(r.detached.length || r.unpinned.length ? `detached ${r.detached.length} programs, removed ${r.unpinned.length} map pins` : `nothing loaded at ${cfg.bpffs}`);
}

export function bpfCommand(): Command {
  const bpf = new Command('bpf')
    .description('load, inspect and program the eBPF datapath')
    .option('--bpffs <dir>', `pin directory on bpffs (default ${defaults.bpffs})`)
    .option('--cgroup <path>', 'cgroup v2 directory to attach to (default: the cgroup v2 root)')
    .option('-o, --output <format>', 'table or json', 'table');
  const config = (cmd: Command): DatapathConfig => datapathConfig(cmd.optsWithGlobals<DatapathFlags>());

  bpf
    .command('load')
    .description('load the programs and maps (reusing pins) and attach them once; idempotent')
    .option('--proxy <ip:port>', 'node proxy address redirected connections go to')
    .option('--proxy6 <ip>', 'IPv6 address of the proxy (same port); without it IPv6 services are not redirected')
    .option('--mark <n>', `SO_MARK bits of the proxy's own sockets, never redirected (default ${hex(defaults.proxyMark)})`)
    .option('--max-services <n>', 'capacity of the services map (only when it is created)')
    .action((flags: LoadFlags, cmd: Command) => {
      const cfg = config(cmd);
      const load = loadConfig(flags);
      const dp = Datapath.open({
        bpffs: cfg.bpffs,
        cgroup: requireCgroup(cfg),
        objectDir: cfg.objectDir,
        settings: load.settings,
        ...(load.maxServices !== undefined ? { capacity: { services: load.maxServices } } : {}),
        logger: log(),
      });
      try {
        const programs = dp.installed?.programs ?? [];
        if (cfg.output === 'json') out(json({ bpffs: cfg.bpffs, cgroup: cfg.cgroup, programs }));
        else out(table(['PROGRAM', 'HOOK', 'ACTION', 'LINK', 'PROG'], programs.map((p) => [p.name, p.section, p.action, p.linkId, p.progId])));
      } finally {
        dp.close();
      }
    });

  bpf
    .command('unload')
    .description('detach every program and remove every pin')
    .action((_f: unknown, cmd: Command) => unload(config(cmd)));

  bpf
    .command('status')
    .description('programs, where they are attached, pins, fill level of each map, counters')
    .action((_f: unknown, cmd: Command) => {
      const cfg = config(cmd);
      withDatapath(cfg, (dp) => {
        const s = dp.status();
        out(cfg.output === 'json' ? json(s) : renderStatus(s));
      });
    });

  bpf
    .command('dump')
    .argument('[map]', `one of ${Object.values(MAP_NAMES).join(', ')} (default: all)`)
    .description('every entry of the maps, decoded, with the service each is for (named by the agent)')
    .option('--admin <ip:port>', 'the agent admin endpoint that names the services', agentDefaults.admin)
    .action(async (map: string | undefined, flags: { admin: string }, cmd: Command) => {
      const cfg = config(cmd);
      const maps = map ? [map] : Object.values(MAP_NAMES);
      // Names are a help, not a need: a dump is most wanted when the agent is down.
      let names: ServiceNames | undefined;
      if (maps.some((m) => NAMED_MAPS.has(m))) {
        try {
          names = serviceNames(await fetchRoutes(flags.admin));
        } catch (err) {
          process.stderr.write(`ecnet: service names unavailable (SERVICE shows -): ${(err as Error).message}\n`);
        }
      }
      withDatapath(cfg, (dp) => {
        const dumps = maps.map((m) => dp.dump(m));
        if (cfg.output === 'json') {
          const body = dumps.map((d) => ({
            map: d.map,
            entries: d.rows.map((row) => (NAMED_MAPS.has(d.map) ? { ...(row as object), service: serviceOf(d.map, row, names) ?? null } : row)),
          }));
          out(json(map ? body[0] : body));
        } else {
          out(dumps.map((d) => `${d.map} (${d.rows.length} entries)\n${renderDump(d, names)}`).join('\n\n'));
        }
      });
    });

  bpf
    .command('listen')
    .description('stand in for the node proxy: answer each connection with the original destination the datapath recorded')
    .option('--proxy <ip:port>', 'address to listen on: the proxy address the programs were loaded with')
    .option('--count <n>', 'exit after this many connections')
    .action(async (flags: ListenFlags, cmd: Command) => {
      const cfg = config(cmd);
      const listen = listenConfig(flags);
      const dp = Datapath.openPinned(cfg.bpffs, log());
      await serveOriginalDestinations(dp, listen.proxy, listen.count, cfg.output === 'json').finally(() => dp.close());
    });

  const service = bpf.command('service').description('program one redirect by hand (the agent owns them normally)');
  service
    .command('add')
    .argument('<address>', 'IP:PORT[/tcp]')
    .option('--id <n>', 'service id carried to the proxy', '0')
    .action((address: string, flags: { id: string }, cmd: Command) => {
      const cfg = config(cmd);
      const key = parseServiceAddress(address);
      const id = serviceIdFlag(flags.id);
      withDatapath(cfg, (dp) => dp.services.set(key, { id, disabled: false }));
      out(`redirecting ${formatEndpoint(key)}/${key.protocol} (id ${id})`);
    });
  service
    .command('del')
    .argument('<address>', 'IP:PORT[/tcp]')
    .action((address: string, _f: unknown, cmd: Command) => {
      const cfg = config(cmd);
      const key = parseServiceAddress(address);
      const existed = withDatapath(cfg, (dp) => dp.services.delete(key));
      if (!existed) throw new DatapathError('ECNET_NOT_FOUND', `${formatEndpoint(key)}/${key.protocol} is not in ${MAP_NAMES.services}`);
      out(`no longer redirecting ${formatEndpoint(key)}/${key.protocol}`);
    });
  return bpf;
}
