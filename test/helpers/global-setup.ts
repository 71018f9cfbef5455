// Once per test run: compile the TypeScript the CLI tests run from dist/, so no test runs a stale build and no
// two test files compile at the same time.
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { packageRoot } from '../../src/paths.js';

export default function setup(): void {
  execFileSync(process.execPath, [join(packageRoot, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', join(packageRoot, 'tsconfig.json')], { stdio: 'inherit' });
}
