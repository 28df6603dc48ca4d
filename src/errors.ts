/**
 * The few error classes callers branch on. Everything else uses the built-in
 * classes (`TypeError`, `RangeError`, `SyntaxError`).
 *
 * @module
 */

/**
 * A refusal of a control request whose message is safe to send back to the
 * control client as the `reason` of a `FAILED` reply: it never holds a
 * password, a hash or a token.
 */
export class RefusalError extends Error {
  /** Creates a refusal; `message` must be safe to show to the peer. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "RefusalError";
  }
}

/**
 * A violation of the RFB protocol (RFC 6143) by a peer, or a failure the
 * peer reported. The message is safe to log and to send to the viewer.
 */
export class RfbError extends Error {
  /** Creates an RFB protocol error with a message safe to show to a peer. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "RfbError";
  }
}

/**
 * The viewer answered the VNC Authentication challenge wrongly (RFC 6143
 * §7.2.2): a wrong one-time password, which burns the forwarding.
 */
export class ViewerAuthError extends RfbError {
  /** Creates the error; the message says only that authentication failed. */
  constructor(message = "Authentication failed", options?: ErrorOptions) {
    super(message, options);
    this.name = "ViewerAuthError";
  }
}

/** A bad command line: the CLI prints the message and the usage hint. */
export class UsageError extends Error {
  /** Creates a usage error for a bad flag or value. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "UsageError";
  }
}

/** Returns a short, single-line description of any thrown value. */
export function describeError(error: unknown): string {
  if (error instanceof Error) return error.message.split("\n")[0] || error.name;
  return String(error);
}
