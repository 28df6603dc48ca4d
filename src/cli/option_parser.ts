/**
 * A small optparse-compatible command-line parser: `--opt value`,
 * `--opt=value`, unambiguous long-option prefixes (`--pid` for `--pid-file`,
 * as the snf-vncauthproxy Docker image passes), short options (`-p 5`,
 * `-p5`, `-dn`) and `--` to end the options. `node:util` `parseArgs` has no
 * prefix matching, which the drop-in needs.
 *
 * @module
 */

import { UsageError } from "../errors.ts";

/** What an option takes. */
export type OptionKind = "flag" | "string" | "int" | "float";

/** One option of a command. */
export interface OptionSpec {
  /** Long name without dashes, e.g. `pid-file`; also the key in the result. */
  readonly long: string;
  /** Optional one-letter short name without the dash. */
  readonly short?: string;
  /** Value type. */
  readonly kind: OptionKind;
  /** Placeholder shown in help, e.g. `FILE`. */
  readonly metavar?: string;
  /** One line of help. */
  readonly help: string;
  /**
   * An option of the original command (snf-vncauthproxy): a prefix that
   * named it there still names it, even where a newer option shares the
   * prefix (`--max` is `--max-port`, not `--max-session-time`).
   */
  readonly legacy?: boolean;
  /** The option may be given more than once: its value is the list of every value given. */
  readonly repeatable?: boolean;
}

/** A parsed option value. */
export type OptionValue = string | number | boolean | readonly string[];

/** The result of {@linkcode parseOptions}. */
export interface ParsedOptions {
  /** Values by long name; options not given are absent. */
  readonly values: Readonly<Record<string, OptionValue>>;
  /** Arguments that are not options, in order. */
  readonly positionals: readonly string[];
}

/**
 * Parses `args` against `specs`.
 *
 * @throws {UsageError} on an unknown or ambiguous option, a missing value or
 * a value of the wrong type.
 */
export function parseOptions(
  specs: readonly OptionSpec[],
  args: readonly string[],
): ParsedOptions {
  const values: Record<string, OptionValue> = {};
  const positionals: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (arg === "--") {
      positionals.push(...args.slice(i + 1));
      break;
    }
    if (arg.startsWith("--")) {
      const eq = arg.indexOf("=");
      const name = eq === -1 ? arg.slice(2) : arg.slice(2, eq);
      const spec = matchLong(specs, name);
      if (spec.kind === "flag") {
        if (eq !== -1) {
          throw new UsageError(`--${spec.long} option does not take a value`);
        }
        values[spec.long] = true;
        continue;
      }
      let raw: string | undefined;
      if (eq !== -1) raw = arg.slice(eq + 1);
      else raw = args[++i];
      if (raw === undefined) {
        throw new UsageError(`--${spec.long} option requires an argument`);
      }
      store(values, spec, raw);
      continue;
    }
    if (arg.startsWith("-") && arg.length > 1) {
      // A cluster of short options: flags may be combined; the first option
      // taking a value takes the rest of the cluster or the next argument.
      for (let j = 1; j < arg.length; j++) {
        const letter = arg[j]!;
        const spec = specs.find((s) => s.short === letter);
        if (spec === undefined) {
          throw new UsageError(`no such option: -${letter}`);
        }
        if (spec.kind === "flag") {
          values[spec.long] = true;
          continue;
        }
        const rest = arg.slice(j + 1);
        const raw = rest !== "" ? rest : args[++i];
        if (raw === undefined) {
          throw new UsageError(`-${letter} option requires an argument`);
        }
        store(values, spec, raw);
        break;
      }
      continue;
    }
    positionals.push(arg);
  }
  return { values, positionals };
}

function store(values: Record<string, OptionValue>, spec: OptionSpec, raw: string): void {
  const value = convert(spec, raw);
  if (!spec.repeatable) {
    values[spec.long] = value;
    return;
  }
  const previous = (values[spec.long] ?? []) as readonly string[];
  values[spec.long] = [...previous, String(value)];
}

function matchLong(specs: readonly OptionSpec[], name: string): OptionSpec {
  const exact = specs.find((s) => s.long === name);
  if (exact !== undefined) return exact;
  const candidates = name === "" ? [] : specs.filter((s) => s.long.startsWith(name));
  if (candidates.length === 1) return candidates[0]!;
  const legacy = candidates.filter((s) => s.legacy);
  if (legacy.length === 1) return legacy[0]!;
  if (candidates.length === 0) {
    throw new UsageError(`no such option: --${name}`);
  }
  const list = candidates.map((s) => `--${s.long}`).join(", ");
  throw new UsageError(`ambiguous option: --${name} (${list}?)`);
}

function convert(spec: OptionSpec, raw: string): OptionValue {
  switch (spec.kind) {
    case "int": {
      if (!/^[+-]?\d+$/.test(raw.trim())) {
        throw new UsageError(
          `option --${spec.long}: invalid integer value: "${raw}"`,
        );
      }
      return Number.parseInt(raw, 10);
    }
    case "float": {
      const value = Number(raw);
      if (raw.trim() === "" || !Number.isFinite(value)) {
        throw new UsageError(
          `option --${spec.long}: invalid floating-point value: "${raw}"`,
        );
      }
      return value;
    }
    default:
      return raw;
  }
}

/** Formats the options part of a help text, one option per line. */
export function formatOptionsHelp(specs: readonly OptionSpec[]): string {
  const rows = specs.map((spec) => {
    const value = spec.kind === "flag" ? "" : `=${spec.metavar ?? "VALUE"}`;
    const names = spec.short === undefined
      ? `    --${spec.long}${value}`
      : `-${spec.short}, --${spec.long}${value}`;
    return [names, spec.help] as const;
  });
  const width = Math.max(...rows.map(([names]) => names.length)) + 2;
  return rows.map(([names, help]) => `  ${names.padEnd(width)}${help}`).join(
    "\n",
  );
}
