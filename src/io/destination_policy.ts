/**
 * Which VNC servers forwardings may reach: address ranges for TCP
 * (`--backend-allow`, `--backend-deny`) checked on every address a name
 * resolves to, and directories for Unix sockets (`--unix-backend-dir`)
 * checked on the resolved path. A control user can ask for any
 * destination; without these checks the proxy would reach whatever the
 * daemon's host can (the control network, the hypervisor's own services).
 *
 * @module
 */

import { normalize } from "node:path/posix";
import { type Cidr, cidrContains, ipBytes, parseCidr } from "./cidr.ts";

/** The ranges and directories of a {@linkcode DestinationPolicy}. */
export interface DestinationPolicyOptions {
  /** Ranges forwardings may reach; empty = any. @default {[]} */
  readonly allow?: readonly string[];
  /** Ranges forwardings may not reach; wins over `allow`. @default {[]} */
  readonly deny?: readonly string[];
  /** Directories whose sockets may be reached; empty = no Unix socket. @default {[]} */
  readonly unixDirs?: readonly string[];
}

/** Why a destination was refused, for the log (the reply only says `backend not allowed`). */
export class DestinationRefusedError extends Error {
  /** Creates the error; `message` may name the path or address (never a secret). */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "DestinationRefusedError";
  }
}

/** The destinations forwardings may reach. */
export class DestinationPolicy {
  readonly #allow: readonly Cidr[];
  readonly #deny: readonly Cidr[];
  readonly #unixDirs: readonly string[];

  /**
   * Parses the ranges once.
   *
   * @throws {SyntaxError} for a range that does not parse.
   */
  constructor(options: DestinationPolicyOptions = {}) {
    this.#allow = (options.allow ?? []).map(parseCidr);
    this.#deny = (options.deny ?? []).map(parseCidr);
    this.#unixDirs = [...(options.unixDirs ?? [])];
  }

  /**
   * The addresses of `addresses` a forwarding may connect to, in their
   * order: inside an allowed range (when there is an allow list) and in no
   * denied range. With any list set, something that is no plain IP address
   * (an IPv6 zone, `fe80::1%eth0`) is refused rather than guessed at.
   */
  allowedAddresses(addresses: readonly string[]): string[] {
    if (this.#allow.length === 0 && this.#deny.length === 0) return [...addresses];
    return addresses.filter((address) => {
      if (ipBytes(address) === undefined) return false;
      if (this.#deny.some((range) => cidrContains(range, address))) return false;
      return this.#allow.length === 0 || this.#allow.some((range) => cidrContains(range, address));
    });
  }

  /**
   * Resolves a Unix socket path and checks that it stays below an allowed
   * directory, returning the resolved path to connect to.
   *
   * The check is made twice: first on the path as written with `..`
   * collapsed (so a path outside every directory is refused without
   * touching the file system, which would tell a control user what exists
   * there), then on the real path, symlinks resolved, against each
   * directory's real path (so a symlink inside a directory cannot lead
   * out of it).
   *
   * What remains (TOCTOU): the daemon connects to the resolved path right
   * after the check, so a symlink swapped in later is not followed; but
   * whoever can write to an allowed directory, or to a directory on the
   * resolved path, can still replace a component between the check and the
   * connect. Allowed directories must be writable only by the hypervisor.
   *
   * @throws {DestinationRefusedError} when the path is not allowed,
   * {@linkcode Deno.errors.NotFound} when an allowed path does not exist.
   */
  async resolveUnixPath(path: string): Promise<string> {
    if (this.#unixDirs.length === 0) {
      throw new DestinationRefusedError(`Unix socket "${path}": no --unix-backend-dir is set`);
    }
    if (!path.startsWith("/")) {
      throw new DestinationRefusedError(`Unix socket "${path}" is not an absolute path`);
    }
    const dirs = await Promise.all(this.#unixDirs.map(async (dir) => {
      const real = await Deno.realPath(dir).catch(() => undefined);
      return { written: normalize(dir), real };
    }));
    const lexical = normalize(path);
    if (!dirs.some(({ written, real }) => isBelow(lexical, written) || isBelow(lexical, real))) {
      throw new DestinationRefusedError(
        `Unix socket "${path}" is outside every --unix-backend-dir`,
      );
    }
    const real = await Deno.realPath(path);
    if (!dirs.some((dir) => isBelow(real, dir.real))) {
      throw new DestinationRefusedError(
        `Unix socket "${path}" resolves to "${real}", outside every --unix-backend-dir`,
      );
    }
    return real;
  }
}

/** True when `path` lies strictly below `dir` (both normalised, absolute). */
function isBelow(path: string, dir: string | undefined): boolean {
  if (dir === undefined) return false;
  const prefix = dir.endsWith("/") ? dir : `${dir}/`;
  return path.startsWith(prefix) && path.length > prefix.length;
}
