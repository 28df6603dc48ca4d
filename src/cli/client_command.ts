/**
 * `vncauthproxy client`: the operator's test command, with snf's flags.
 * Unlike snf's client, `--server` and `--server-port` are honoured (snf's
 * ignored them), and `--gateway` asks for a single-use gateway token.
 *
 * @module
 */

import { CONSOLE_TYPES, type ConsoleType } from "../config.ts";
import { UsageError } from "../errors.ts";
import { type ForwardingReply, requestForwarding } from "../control/snf/control_client.ts";
import { formatOptionsHelp, type OptionSpec, parseOptions } from "./option_parser.ts";
import type { CliIo } from "./cli_io.ts";

/** The client's options (snf's, plus `--json` and the gateway's). */
export const CLIENT_OPTIONS: readonly OptionSpec[] = [
  { long: "help", short: "h", kind: "flag", help: "show this help and exit" },
  { long: "server", kind: "string", metavar: "SERVER", help: "daemon address [127.0.0.1]" },
  { long: "server-port", kind: "int", metavar: "SERVER_PORT", help: "daemon control port [24999]" },
  {
    long: "sport",
    short: "s",
    kind: "int",
    metavar: "PORT",
    help: "source port, 0 = from the pool [0]",
  },
  {
    long: "dest",
    short: "d",
    kind: "string",
    metavar: "HOST",
    help: "VNC server host, or unix:/abs/path with -p 0 (required)",
  },
  {
    long: "dport",
    short: "p",
    kind: "int",
    metavar: "PORT",
    help: "VNC server port, 0 for a Unix socket (required)",
  },
  {
    long: "dest-password",
    kind: "string",
    metavar: "PASSWORD",
    help: "the VNC server's own password, if it asks for one",
  },
  { long: "dest-tls", kind: "flag", help: "TLS to the VNC server (VeNCrypt x509 or TLS type)" },
  {
    long: "dest-tls-name",
    kind: "string",
    metavar: "NAME",
    help: "with --dest-tls: the name its certificate must match [the -d host]",
  },
  {
    long: "password",
    short: "P",
    kind: "string",
    metavar: "PASSWORD",
    help: "one-time VNC password for the client (required, but optional with --gateway)",
  },
  { long: "auth-user", kind: "string", metavar: "AUTH_USER", help: "control user (required)" },
  {
    long: "auth-password",
    kind: "string",
    metavar: "AUTH_PASSWORD",
    help: "control password (required)",
  },
  {
    long: "type",
    kind: "string",
    metavar: "TYPE",
    help: "console type: vnc, vnc-ws or vnc-wss [vnc; vnc-wss with --gateway]",
  },
  {
    long: "gateway",
    kind: "flag",
    help: "ask for a single-use token for the daemon's gateway port (prints its URL or path)",
  },
  {
    long: "ttl",
    kind: "float",
    metavar: "N",
    help: "with --gateway: seconds the token stays valid [the daemon's --connect-timeout]",
  },
  {
    long: "client-address",
    kind: "string",
    metavar: "IP",
    help: "the only viewer address (a pool port also takes a CIDR) that may connect",
  },
  { long: "enable-ssl", kind: "flag", help: "use TLS to the control socket" },
  { long: "ca-cert", kind: "string", metavar: "CACERT", help: "PEM CA certificate to trust" },
  {
    long: "strict",
    kind: "flag",
    help: "require a valid server certificate (always the case; kept for compatibility)",
  },
  { long: "json", kind: "flag", help: "print the raw JSON reply" },
  { long: "timeout", kind: "float", metavar: "N", help: "seconds to wait for the reply [60]" },
];

/** Help text of the client. */
export function clientHelp(): string {
  return [
    "Usage: vncauthproxy client -d HOST -p PORT -P PASSWORD --auth-user USER --auth-password PASS [options]",
    "       vncauthproxy client --gateway -d HOST -p PORT [-P PASSWORD] --auth-user USER --auth-password PASS [options]",
    "",
    "Requests a one-time forwarding from a running vncauthproxy daemon.",
    "",
    "Options:",
    formatOptionsHelp(CLIENT_OPTIONS),
    "",
  ].join("\n");
}

/** Runs the client; returns 0 when the forwarding was set up, 1 otherwise. */
export async function runClientCommand(args: readonly string[], io: CliIo): Promise<number> {
  const { values, positionals } = parseOptions(CLIENT_OPTIONS, args);
  if (values.help) {
    io.stdout(clientHelp());
    return 0;
  }
  if (positionals.length > 0) throw new UsageError(`Unexpected argument "${positionals[0]}"`);
  const gateway = values.gateway === true;
  const required = [
    "dest",
    "dport",
    ...(gateway ? [] : ["password"]),
    "auth-user",
    "auth-password",
  ];
  for (const name of required) {
    if (values[name] === undefined) {
      throw new UsageError(`The --${name} option is required`);
    }
  }
  const type = (values.type ?? (gateway ? "vnc-wss" : "vnc")) as string;
  if (!(CONSOLE_TYPES as readonly string[]).includes(type)) {
    throw new UsageError(`--type must be one of ${CONSOLE_TYPES.join(", ")}`);
  }
  if (gateway && type === "vnc") throw new UsageError("--gateway needs --type vnc-ws or vnc-wss");
  if (values.ttl !== undefined && !gateway) throw new UsageError("--ttl needs --gateway");
  if (values["dest-tls-name"] !== undefined && values["dest-tls"] !== true) {
    throw new UsageError("--dest-tls-name needs --dest-tls");
  }
  const ttl = values.ttl as number | undefined;
  if (ttl !== undefined && !(ttl > 0)) throw new UsageError("--ttl must be a positive number");
  if (values.strict && values["ca-cert"] === undefined) {
    throw new UsageError("--strict needs --ca-cert");
  }
  let caCerts: string[] | undefined;
  if (values["ca-cert"] !== undefined) {
    caCerts = [await Deno.readTextFile(values["ca-cert"] as string)];
  }
  const dest = values.dest as string;
  const dport = values.dport as number;
  let reply: ForwardingReply;
  try {
    reply = await requestForwarding({
      sourcePort: (values.sport as number | undefined) ?? 0,
      destinationAddress: dest,
      destinationPort: dport,
      ...(values["dest-password"] === undefined
        ? {}
        : { destinationPassword: values["dest-password"] as string }),
      ...(values["dest-tls"] === true ? { destinationTls: true } : {}),
      ...(values["dest-tls-name"] === undefined
        ? {}
        : { destinationTlsName: values["dest-tls-name"] as string }),
      ...(values.password === undefined ? {} : { password: values.password as string }),
      authUser: values["auth-user"] as string,
      authPassword: values["auth-password"] as string,
      type: type as ConsoleType,
      ...(gateway ? { gateway } : {}),
      ...(ttl === undefined ? {} : { ttl }),
      ...(values["client-address"] === undefined
        ? {}
        : { clientAddress: values["client-address"] as string }),
    }, {
      server: (values.server as string | undefined) ?? "127.0.0.1",
      port: (values["server-port"] as number | undefined) ?? 24999,
      tls: values["enable-ssl"] === true,
      ...(caCerts ? { caCerts } : {}),
      timeoutMs: Math.round(((values.timeout as number | undefined) ?? 60) * 1000),
    });
  } catch (error) {
    io.stderr(`vncauthproxy client: Cannot request a forwarding: ${(error as Error).message}\n`);
    return 1;
  }
  if (values.json) {
    io.stdout(JSON.stringify(reply) + "\n");
  } else {
    const target = dest.startsWith("unix:")
      ? dest
      : dest.includes(":")
      ? `[${dest}]:${dport}`
      : `${dest}:${dport}`;
    io.stdout(
      `Forwarding ${
        reply.proxy_address ?? "-"
      }:${reply.source_port} -> ${target}: ${reply.status}\n`,
    );
    if (reply.reason !== undefined) io.stdout(`Reason: ${reply.reason}\n`);
    // The token is the viewer's credential: the operator asked for it.
    if (reply.url !== undefined) io.stdout(`URL ${reply.url}\n`);
    else if (reply.path !== undefined) io.stdout(`Path ${reply.path}\n`);
  }
  return reply.status === "OK" ? 0 : 1;
}
