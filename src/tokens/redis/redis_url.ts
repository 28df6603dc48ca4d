/**
 * Where a Redis server is and how to log in, from a URL:
 *
 * - `redis://[[user]:password@]host[:port][/db]`: TCP; `rediss://…` the same over TLS.
 *   The host may be a name, an IPv4 address or an IPv6 address in brackets;
 *   the port defaults to 6379 and the database to 0. User and password are
 *   percent-decoded (write `%40` for `@`, `%3A` for `:`); `:password@`
 *   alone logs in as the default user (`AUTH password`).
 * - `unix:/absolute/path[?db=N][&user=U][&password=P]`: a Unix socket
 *   (`unix:///absolute/path` too). Query values are percent-decoded.
 *
 * @module
 */

import { isIP } from "node:net";
import { formatHostPort, unbracketHost } from "../../io/duplex.ts";

/** Default TCP port of Redis. */
const REDIS_DEFAULT_PORT = 6379;

/** Largest database index accepted (Redis defaults to 16 databases; configs may raise it). */
const MAX_DB = 1_000_000;

/** A parsed Redis URL. Holds the password: never log it; log {@linkcode describeRedisUrl}. */
export type RedisUrl =
  | {
    readonly transport: "tcp" | "tls";
    readonly hostname: string;
    readonly port: number;
    readonly db: number;
    readonly username?: string;
    readonly password?: string;
  }
  | {
    readonly transport: "unix";
    readonly path: string;
    readonly db: number;
    readonly username?: string;
    readonly password?: string;
  };

/**
 * Parses a Redis URL (see the module's documentation).
 *
 * @throws {SyntaxError} on anything else, saying what is wrong without
 * repeating any of the text: a password may sit anywhere in a malformed URL.
 */
export function parseRedisUrl(text: string): RedisUrl {
  const trimmed = text.trim();
  const scheme = /^([a-z]+):/i.exec(trimmed)?.[1]?.toLowerCase();
  if (scheme === "unix") return parseUnix(trimmed);
  if (scheme !== "redis" && scheme !== "rediss") {
    throw invalid("expected redis://, rediss:// or unix:/path");
  }
  const bad = invalid;
  if (!/^[a-z]+:\/\//i.test(trimmed)) throw bad("expected // after the scheme");
  let url: URL;
  try {
    url = new URL(trimmed);
  } catch {
    throw bad("not a URL");
  }
  if (url.search !== "" || url.hash !== "") throw bad("no query or fragment allowed");
  let hostname = url.hostname;
  if (hostname === "") throw bad("no host");
  if (hostname.startsWith("[")) hostname = unbracketHost(hostname);
  else if (isIP(hostname) === 0 && !/^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$/i.test(hostname)) {
    throw bad("invalid host name");
  }
  const port = url.port === "" ? REDIS_DEFAULT_PORT : Number(url.port);
  if (!(port >= 1 && port <= 65535)) throw bad("port out of range");
  const db = parseDb(url.pathname.replace(/^\//, ""), bad);
  const credentials = decodeCredentials(url.username, url.password, trimmed);
  return {
    transport: scheme === "rediss" ? "tls" : "tcp",
    hostname,
    port,
    db,
    ...credentials,
  };
}

/** The error of a malformed URL: what is wrong, none of the text. */
function invalid(why: string): SyntaxError {
  return new SyntaxError(`Invalid Redis URL: ${why}`);
}

function parseUnix(text: string): RedisUrl {
  const bad = invalid;
  const rest = text.slice("unix:".length).replace(/^\/\/(?=\/)/, "");
  const queryAt = rest.indexOf("?");
  const rawPath = queryAt === -1 ? rest : rest.slice(0, queryAt);
  if (!rawPath.startsWith("/")) throw bad("the socket path must be absolute");
  let path: string;
  try {
    path = decodeURIComponent(rawPath);
  } catch {
    throw bad("invalid percent-encoding");
  }
  if (path.includes("\0")) throw bad("invalid socket path");
  let db = 0;
  let username: string | undefined;
  let password: string | undefined;
  if (queryAt !== -1) {
    const seen = new Set<string>();
    for (const pair of rest.slice(queryAt + 1).split("&")) {
      if (pair === "") continue;
      const eq = pair.indexOf("=");
      const name = eq === -1 ? pair : pair.slice(0, eq);
      let value: string;
      try {
        value = decodeURIComponent(eq === -1 ? "" : pair.slice(eq + 1));
      } catch {
        throw bad("invalid percent-encoding");
      }
      if (name !== "db" && name !== "user" && name !== "password") {
        throw bad("unknown parameter (db, user and password are known)");
      }
      if (seen.has(name)) throw bad(`"${name}" given twice`);
      seen.add(name);
      if (name === "db") db = parseDb(value, bad);
      else if (name === "user") username = value;
      else password = value;
    }
  }
  if (username !== undefined && password === undefined) throw bad("a user needs a password");
  if (password === "") throw bad("empty password");
  return {
    transport: "unix",
    path,
    db,
    ...(username === undefined || username === "" ? {} : { username }),
    ...(password === undefined ? {} : { password }),
  };
}

function parseDb(text: string, bad: (why: string) => SyntaxError): number {
  if (text === "") return 0;
  if (!/^\d{1,7}$/.test(text) || Number(text) > MAX_DB) {
    throw bad(`invalid database (a number up to ${MAX_DB})`);
  }
  return Number(text);
}

function decodeCredentials(
  rawUser: string,
  rawPassword: string,
  text: string,
): { username?: string; password?: string } {
  const hasAt = /^[a-z]+:\/\/[^/]*@/i.test(text);
  if (!hasAt) return {};
  let username: string;
  let password: string;
  try {
    username = decodeURIComponent(rawUser);
    password = decodeURIComponent(rawPassword);
  } catch {
    throw invalid("invalid percent-encoding in the credentials");
  }
  if (password === "") throw invalid("credentials without a password (write user:password@)");
  return username === "" ? { password } : { username, password };
}

/** The URL for log lines: scheme, user, host, port and database; never the password. */
export function describeRedisUrl(url: RedisUrl): string {
  const user = url.username === undefined ? "" : `${encodeURIComponent(url.username)}@`;
  if (url.transport === "unix") {
    const query = [
      ...(url.db === 0 ? [] : [`db=${url.db}`]),
      ...(url.username === undefined ? [] : [`user=${encodeURIComponent(url.username)}`]),
    ];
    return `unix:${url.path}${query.length === 0 ? "" : `?${query.join("&")}`}`;
  }
  const scheme = url.transport === "tls" ? "rediss" : "redis";
  return `${scheme}://${user}${formatHostPort(url.hostname, url.port)}/${url.db}`;
}
