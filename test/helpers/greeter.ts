import { type Server, createServer } from 'node:net';

/** A TCP server that greets with its name, echoes, and says bye on a half-close. */
export async function greeter(name: string, host = '127.0.0.1', port = 0): Promise<Server> {
  const s = createServer({ allowHalfOpen: true }, (c) => {
    c.on('error', () => undefined);
    c.write(`hello from ${name}\n`);
    c.on('data', (d) => c.write(d));
    c.on('end', () => c.end(`bye from ${name}\n`));
  });
  await new Promise<void>((r) => s.listen(port, host, r));
  return s;
}
