// `ecnet crds` and `ecnet validate`: the flomesh.io API (and the MCS API's CRDs) as files.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { Command } from 'commander';
import { crdFiles, crdPaths, crdStream } from '../api/crds.js';
import { KINDS } from '../api/flomesh.js';
import { readManifests } from '../api/manifests.js';
import { formatProblem } from '../api/schema.js';

export function crdsCommand(): Command {
  return new Command('crds')
    .description('print the flomesh.io CRDs (for kubectl apply -f -), or write one file each with --dir (with the MCS API\'s, multicluster.x-k8s.io), or the flomesh.io ones in one with --file')
    .option('--dir <dir>', `write <group>_<plural>.yaml files here (${crdPaths.dir})`)
    .option('--file <file>', `write them all in one file (${crdPaths.file}, for a Karmada API server)`)
    .action((flags: { dir?: string; file?: string }) => {
      if (!flags.dir && !flags.file) return void process.stdout.write(crdStream());
      if (flags.dir) {
        mkdirSync(flags.dir, { recursive: true });
        for (const [file, text] of crdFiles()) writeFileSync(join(flags.dir, file), text);
        process.stdout.write(`wrote ${crdFiles().size} CRDs to ${flags.dir}\n`);
      }
      if (flags.file) {
        mkdirSync(dirname(flags.file), { recursive: true });
        writeFileSync(flags.file, crdStream());
        process.stdout.write(`wrote ${Object.keys(KINDS).length} CRDs to ${flags.file}\n`);
      }
    });
}

export function validateCommand(): Command {
  return new Command('validate')
    .description('check manifests (multi-document YAML) as the API server would, listing every problem')
    .requiredOption('-f, --filename <file>', 'YAML file, - for standard input')
    .action((flags: { filename: string }) => {
      const text = readFileSync(flags.filename === '-' ? 0 : flags.filename, 'utf8');
      let bad = 0;
      for (const d of readManifests(text)) {
        const what = `${d.kind}/${d.name} (line ${d.line})`;
        for (const w of d.warnings) process.stdout.write(`${what}: ${formatProblem(w)}\n`);
        if (!d.problems.length) {
          process.stdout.write(`${what}: valid\n`);
          continue;
        }
        bad++;
        for (const p of d.problems) process.stdout.write(`${what}: ${formatProblem(p)}\n`);
      }
      if (bad) {
        process.stderr.write(`ecnet: ${bad} document(s) invalid [ECNET_INVALID]\n`);
        process.exitCode = 1;
      }
    });
}
