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

/** User plus system CPU seconds of one process (all its threads). */
function ownCpuSeconds(pid: number): number {
  const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  // Fields after the parenthesised command name start at field 3 (state).
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
}

function children(pid: number): number[] {
  const result: number[] = [];
  for (const task of safeReadDir(`/proc/${pid}/task`)) {
    const text = safeRead(`/proc/${pid}/task/${task}/children`);
    for (const child of text.split(" ")) if (child.trim()) result.push(Number(child));
  }
  return result;
}

/**
 * CPU seconds of `pid` and every live descendant (socat and websockify fork
 * one child per connection). Read while the connections are still open.
 */
export function cpuSeconds(pid: number): number {
  let total = 0;
  const pending = [pid];
  while (pending.length > 0) {
    const next = pending.pop()!;
    try {
      total += ownCpuSeconds(next);
    } catch {
      continue; // Exited meanwhile.
    }
    pending.push(...children(next));
  }
  return total;
}

/** Resident set size of `pid` in MB (10^6 bytes), from VmRSS. */
export function rssMb(pid: number): number {
  const match = /^VmRSS:\s+(\d+) kB/m.exec(Deno.readTextFileSync(`/proc/${pid}/status`));
  return match ? Number(match[1]) * 1024 / 1e6 : NaN;
}

/** Soft limit on open files of `pid`. */
export function openFilesLimit(pid: number | "self" = "self"): number {
  const match = /^Max open files\s+(\d+|unlimited)/m.exec(
    Deno.readTextFileSync(`/proc/${pid}/limits`),
  );
  return match?.[1] === "unlimited" ? Infinity : Number(match?.[1] ?? 0);
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

function safeReadDir(path: string): string[] {
  try {
    return [...Deno.readDirSync(path)].map((entry) => entry.name);
  } catch {
    return [];
  }
}
