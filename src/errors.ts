// The one error base. Every error ecnet throws on purpose has a fixed `code` a caller (or a script reading the
// CLI's stderr) can switch on, and keeps what caused it as `cause`. The CLI prints these as one line; anything
// else reaching it is a bug and is printed with its stack. Logs take errors whole (`log.warn({ err }, …)`), so
// pino keeps the code, the cause and the stack.
export class EcnetError<Code extends string = string> extends Error {
  readonly code: Code;
  constructor(code: Code, message: string, options?: { cause?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
  }
}
