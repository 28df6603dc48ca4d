/**
 * CPU time, memory and machine facts from Linux's /proc.
 *
 * @module
 */

/** Clock ticks per second of /proc/<pid>/stat times (`getconf CLK_TCK`). */
export const CLOCK_TICKS = Number(
  new TextDecoder().decode(new Deno.Command("getconf", { args: ["CLK_TCK"] }).outputSync().stdout)
    .trim(),
) || 100;

/** The fields of /proc/<pid>/stat after the command name (field 3 first). */
function statFields(pid: number | string): string[] {
  const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  return stat.slice(stat.lastIndexOf(")") + 2).split(" ");
}

/**
 * `pid` and all its live descendants (socat and websockify fork one child
 * per connection), found by parent PID: /proc/<pid>/task/<tid>/children
 * needs CONFIG_PROC_CHILDREN, which not every kernel has.
 */
export function processTree(pid: number): number[] {
  const childrenOf = new Map<number, number[]>();
  for (const entry of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    try {
      const parent = Number(statFields(entry.name)[1]);
      const list = childrenOf.get(parent) ?? [];
      list.push(Number(entry.name));
      childrenOf.set(parent, list);
    } catch {
      // Exited meanwhile.
    }
  }
  const tree: number[] = [];
  const pending = [pid];
  while (pending.length > 0) {
    const next = pending.pop()!;
    tree.push(next);
    pending.push(...(childrenOf.get(next) ?? []));
  }
  return tree;
}

/**
 * User plus system CPU seconds of `pid` (all threads) and, unless
 * `withChildren` is false, of its live descendants.
 */
export function cpuSeconds(pid: number, withChildren = true): number {
  let total = 0;
  for (const member of withChildren ? processTree(pid) : [pid]) {
    try {
      const fields = statFields(member);
      // utime and stime are fields 14 and 15.
      total += (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
    } catch {
      // Exited meanwhile.
    }
  }
  return total;
}

/** Resident set size of `pid` in MB (10^6 bytes), from VmRSS. */
export function rssMb(pid: number): number {
  const match = /^VmRSS:\s+(\d+) kB/m.exec(Deno.readTextFileSync(`/proc/${pid}/status`));
  return match ? Number(match[1]) * 1024 / 1e6 : NaN;
}

/** Soft and hard limits on open files of `pid`. */
export function openFilesLimit(pid: number | "self" = "self"): { soft: number; hard: number } {
  const match = /^Max open files\s+(\d+|unlimited)\s+(\d+|unlimited)/m.exec(
    Deno.readTextFileSync(`/proc/${pid}/limits`),
  );
  const parse = (text: string | undefined) => text === "unlimited" ? Infinity : Number(text ?? 0);
  return { soft: parse(match?.[1]), hard: parse(match?.[2]) };
}

/** The machine, as printed above the table. */
export interface MachineInfo {
  /** Online CPUs. */
  readonly nproc: number;
  /** CPU model name. */
  readonly cpuModel: string;
  /** Total memory in GB (10^9 bytes). */
  readonly memoryGb: number;
  /** `uname -r`. */
  readonly kernel: string;
  /** Deno, V8 and TypeScript versions. */
  readonly deno: typeof Deno.version;
}

/** Reads the machine's facts. */
export function machineInfo(): MachineInfo {
  const cpuinfo = safeRead("/proc/cpuinfo");
  const meminfo = safeRead("/proc/meminfo");
  return {
    nproc: navigator.hardwareConcurrency,
    cpuModel: /^model name\s*:\s*(.*)$/m.exec(cpuinfo)?.[1]?.trim() ?? "unknown",
    memoryGb: Number(/^MemTotal:\s+(\d+) kB/m.exec(meminfo)?.[1] ?? 0) * 1024 / 1e9,
    kernel: safeRead("/proc/sys/kernel/osrelease").trim(),
    deno: Deno.version,
  };
}

function safeRead(path: string): string {
  try {
    return Deno.readTextFileSync(path);
  } catch {
    return "";
  }
}
