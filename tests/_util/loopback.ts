/**
 * Connected TCP pairs on loopback, wrapped as `Duplex`es, and an accept loop for test servers.
 *
 * @module
 */

import { ConnDuplex, type Duplex } from "../../src/io/duplex.ts";

/** A connected pair: `server` accepted, `client` connected. */
export interface DuplexPair extends Disposable {
  readonly server: Duplex;
  readonly client: Duplex;
}

/** Makes a connected TCP pair on 127.0.0.1. */
export async function tcpPair(): Promise<DuplexPair> {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const [accepted, connected] = await Promise.all([
    listener.accept(),
    Deno.connect({ hostname: "127.0.0.1", port: (listener.addr as Deno.NetAddr).port }),
  ]);
  const server = new ConnDuplex(accepted);
  const client = new ConnDuplex(connected);
  return {
    server,
    client,
    [Symbol.dispose]() {
      server.close();
      client.close();
    },
  };
}

/** What {@linkcode serveConnections} gives back: counts, waits, and stops it all on dispose. */
export interface ConnectionLoop extends AsyncDisposable {
  /** Connections accepted so far. */
  readonly accepted: number;
  /** Resolves when every handler so far has finished. */
  idle(): Promise<void>;
}

/**
 * Accepts every connection of `listener` and runs `handle` on it (its rejection ignored:
 * a handler reports its own errors), closing the connection when `handle` settles.
 * Disposing closes the listener and every open connection and waits for all handlers.
 */
export function serveConnections(
  listener: Deno.Listener,
  handle: (duplex: ConnDuplex) => Promise<void>,
): ConnectionLoop {
  const handlers = new Set<Promise<void>>();
  const conns = new Set<Duplex>();
  let accepted = 0;
  const loop = (async () => {
    for await (const conn of listener) {
      accepted++;
      const duplex = new ConnDuplex(conn);
      conns.add(duplex);
      const handler = handle(duplex)
        .catch(() => {})
        .finally(() => {
          duplex.close();
          conns.delete(duplex);
        });
      handlers.add(handler);
      handler.finally(() => handlers.delete(handler));
    }
  })().catch(() => {});
  return {
    get accepted() {
      return accepted;
    },
    async idle() {
      await Promise.allSettled([...handlers]);
    },
    async [Symbol.asyncDispose]() {
      listener.close();
      for (const conn of conns) conn.close();
      await loop;
      await Promise.allSettled([...handlers]);
    },
  };
}
