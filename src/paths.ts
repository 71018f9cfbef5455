// Where the package's own files are, wherever it runs from (src/ under vitest, dist/ when built).
import { fileURLToPath } from 'node:url';
import { dirname, resolve } from 'node:path';

/** The package root (the directory holding package.json). */
export const packageRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..');
