/**
 * Connected TCP pairs on loopback, wrapped as `Duplex`es.
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
