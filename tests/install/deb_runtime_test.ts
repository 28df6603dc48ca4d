/**
 * The Debian package of the runtime kind, the one this machine can build
 * (no denort for `deno compile`): `deno task package --kind=runtime` bundles
 * the program and packs it with the Deno runtime of the pinned version.
 * The test checks the package (contents, control fields, lintian with only
 * the runtime's overrides), installs it, and then uses it as an operator and
 * systemd would on a host without Deno: each `deno` the test can find (on
 * its PATH, and its own) is hidden, bind-mounted over with /dev/null in a
 * private mount namespace, and the daemon runs through the unit's own
 * `ExecStart` line, as its `User`, with `env -i`, the unit's environment, a
 * `PATH` without Deno, an empty `HOME` and no `DENO_DIR`. It serves a real forwarding, requested with
 * `vncauthproxy-client`, to a real Xvnc for a real viewer (gvnccapture),
 * after `vncauthproxy passwd add` made the control user with no network at
 * all. Nothing may be written to either `HOME` or the state directory. Then
 * `dpkg -r` and `dpkg -P` must behave as for the compiled kind (deb_test.ts,
 * whose turn it waits for: both install the same package).
 *
 * Needs root, dpkg, lintian, systemd-analyze, unshare, Xvnc and
 * gvnccapture; without them the test is ignored and its name says why. It
 * changes the system: run it on disposable CI machines only.
 */

import assert from "node:assert/strict";
import { randomPool } from "../_util/daemon_process.ts";
import {
  assertPurgeRemovesAll,
  assertRemoveKeepsData,
  cleanUpInstall,
  collectLines,
  DEFAULTS,
  lockPackageTests,
  missingTool,
  PACKAGE,
  run,
  runOk,
  STATE,
  UNIT,
  USER,
} from "../_util/deb.ts";
import { captureVnc, parseHexColor, startXvnc } from "../_util/real_peers.ts";

const ROOT = new URL("../../", import.meta.url).pathname;
/** Native (no Debian revision), as `deno task package` builds by default. */
const VERSION = "0.0.0+test";
const LIB = "/usr/lib/vncauthproxy";
const CONTROL_PASSWORD = "c0ntrol-Secret!";
const VNC_PASSWORD = "r3alPeer";
const DESKTOP = "#336699";

/** The Deno release the package must ship: .ci/run's DENO_VERSION. */
async function pinnedDenoVersion(): Promise<string> {
  const ci = await Deno.readTextFile(`${ROOT}.ci/run`);
  const match = /^DENO_VERSION=(\S+)$/m.exec(ci);
  assert.ok(match, "no DENO_VERSION= in .ci/run");
  return match[1]!;
}

/** The permission flags of deno.json's compile task, in order. */
async function compilePermissions(): Promise<string[]> {
  const config = JSON.parse(await Deno.readTextFile(`${ROOT}deno.json`));
  return (config.tasks.compile as string).split(" ").filter((word) =>
    /^--(allow|deny)-/.test(word)
  );
}

/** Every `deno` this process could run: on its PATH and itself, as real paths. */
function hostDenos(): string[] {
  const found = new Set([Deno.realPathSync(Deno.execPath())]);
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    try {
      found.add(Deno.realPathSync(`${dir}/deno`));
    } catch { /* none there */ }
  }
  return [...found];
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

function shellQuote(word: string): string {
  return `'${word.replaceAll("'", `'\\''`)}'`;
}

/** How a command runs on "a host without Deno"; see {@linkcode withoutDeno}. */
interface Hidden {
  /** The whole environment (`env -i`). */
  readonly env: Record<string, string>;
  /** Run as this user (setpriv), else as root. */
  readonly user?: string;
  /** In a network namespace of its own, with no network at all. */
  readonly offline?: boolean;
}

/**
 * The `unshare` arguments that run `command` with each of
 * {@linkcode hostDenos} bind-mounted over with /dev/null (in a private mount
 * namespace: the rest of the machine keeps its deno), with exactly
 * `hidden.env`.
 */
function withoutDeno(command: readonly string[], hidden: Hidden): string[] {
  const hide = hostDenos().map((path) => `mount --bind /dev/null ${shellQuote(path)}`);
  return [
    "--mount",
    "--propagation",
    "private",
    ...(hidden.offline ? ["--net"] : []),
    "--",
    "/bin/sh",
    "-c",
    ["set -e", ...hide, 'exec "$@"'].join("; "),
    "sh",
    "/usr/bin/env",
    "-i",
    ...Object.entries(hidden.env).map(([name, value]) => `${name}=${value}`),
    ...(hidden.user === undefined ? [] : [
      "/usr/bin/setpriv",
      `--reuid=${hidden.user}`,
      `--regid=${hidden.user}`,
      "--init-groups",
      "--",
    ]),
    ...command,
  ];
}

/** The unit's settings the daemon runs with, and its ExecStart words. */
interface UnitRun {
  readonly user: string;
  readonly env: Record<string, string>;
  readonly argv: string[];
}

/**
 * What systemd would run for the installed unit: `ExecStart` with
 * `$DAEMON_OPTS` split into words, `User=`, and the environment from
 * `Environment=` and `EnvironmentFile=` (the default file).
 */
async function unitRun(): Promise<UnitRun> {
  const unit = await Deno.readTextFile(UNIT);
  const setting = (name: string) => {
    const match = new RegExp(`^${name}=(.+)$`, "m").exec(unit);
    assert.ok(match, `no ${name}= in ${UNIT}`);
    return match[1]!;
  };
  assert.equal(setting("EnvironmentFile"), `-${DEFAULTS}`);
  const options = await runOk("sh", ["-c", `. ${DEFAULTS} && printf %s "$DAEMON_OPTS"`]);
  const env: Record<string, string> = { DAEMON_OPTS: options };
  for (const [, name, value] of unit.matchAll(/^Environment=([A-Z_][A-Z0-9_]*)=(\S*)$/gm)) {
    env[name!] = value!;
  }
  const argv = setting("ExecStart").split(/\s+/).flatMap((word) =>
    word === "$DAEMON_OPTS" ? options.split(/\s+/).filter((option) => option !== "") : [word]
  );
  return { user: setting("User"), env, argv };
}

/** Why the test cannot run here, or undefined when it can. */
function missingPrerequisite(): string | undefined {
  if (Deno.build.os !== "linux") return "needs Linux";
  if (Deno.uid() !== 0) return "needs root";
  return missingTool([
    ...["dpkg", "dpkg-deb", "lintian", "adduser", "setpriv", "getent", "unshare", "mount"],
    ...["systemd-analyze", "Xvnc", "xsetroot", "gvnccapture", "script"],
  ]);
}

/** The names in a directory. */
async function namesIn(dir: string): Promise<string[]> {
  const names = [];
  for await (const entry of Deno.readDir(dir)) names.push(entry.name);
  return names.sort();
}

const missing = missingPrerequisite();

Deno.test({
  name: missing === undefined
    ? "the runtime-kind .deb builds, passes lintian, and serves Xvnc to gvnccapture with no Deno on the host"
    : `IGNORED (${missing}): the runtime-kind .deb builds, installs and serves without Deno on the host`,
  ignore: missing !== undefined,
  async fn(t) {
    using _turn = await lockPackageTests();
    const denoVersion = await pinnedDenoVersion();
    const work = await Deno.makeTempDir({ prefix: "vap-deb-runtime-" });
    await Deno.chmod(work, 0o755);
    // A PATH of only what the launcher needs (sh, which it names by its
    // full path anyway): /usr/bin itself holds this machine's deno.
    const path = `${work}/bin`;
    await Deno.mkdir(path);
    await Deno.symlink("/bin/sh", `${path}/sh`);
    // Empty HOMEs that Deno could write a cache to if it wanted to.
    const rootHome = `${work}/home-root`;
    const serviceHome = `${work}/home-service`;
    await Deno.mkdir(rootHome, { mode: 0o755 });
    await Deno.mkdir(serviceHome, { mode: 0o755 });
    const rootEnv = { PATH: path, HOME: rootHome };
    let daemon: Deno.ChildProcess | undefined;
    try {
      await run("dpkg", ["--purge", PACKAGE]); // a previous run may have left it

      const step = async (name: string, fn: () => Promise<void>) => {
        if (!await t.step(name, fn)) throw new Error(`Stopped after the failed step "${name}"`);
      };
      const debFile = `${work}/${PACKAGE}_${VERSION}_amd64.deb`;

      await step("deno task package --kind=runtime makes the package and says so", async () => {
        const env: Record<string, string> = {
          PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin",
          HOME: Deno.env.get("HOME") ?? "/root",
          SOURCE_DATE_EPOCH: "1767225600",
          // dpkg-deb's own knob: xz -1 packs the 95 MB runtime in half the
          // time of the default -6, for a package 10 % larger.
          DPKG_DEB_COMPRESSOR_LEVEL: "1",
        };
        const denoDir = Deno.env.get("DENO_DIR"); // where deno bundle's esbuild is cached
        if (denoDir !== undefined) env.DENO_DIR = denoDir;
        const out = await runOk(
          Deno.execPath(),
          [
            "task",
            "--config",
            `${ROOT}deno.json`,
            "package",
            "--kind=runtime",
            `--outdir=${work}`,
            VERSION,
          ],
          env,
        );
        assert.match(
          out.trim(),
          new RegExp(
            `^Built the runtime kind \\(Deno ${
              escapeRegExp(denoVersion)
            } from .+; --kind=runtime\\): ${escapeRegExp(debFile)}$`,
          ),
        );
      });

      await step(
        "dpkg-deb: the runtime, the bundle, the launcher and the control fields",
        async () => {
          const contents = await runOk("dpkg-deb", ["--contents", debFile]);
          const entries = new Map(
            contents.trim().split("\n").map((line) => {
              const fields = line.split(/\s+/);
              const name = fields[5]!.replace(/^\.\//, "/").replace(/\/$/, "");
              return [name, { mode: fields[0]!, size: Number(fields[2]) }];
            }),
          );
          const expected: Record<string, string> = {
            "/usr/bin/vncauthproxy": "-rwxr-xr-x",
            "/usr/sbin/vncauthproxy": "lrwxrwxrwx",
            "/usr/bin/vncauthproxy-passwd": "-rwxr-xr-x",
            "/usr/bin/vncauthproxy-client": "-rwxr-xr-x",
            [`${LIB}/deno`]: "-rwxr-xr-x",
            [`${LIB}/vncauthproxy.js`]: "-rw-r--r--",
            [`${LIB}/crypt_worker.js`]: "-rw-r--r--",
            [UNIT]: "-rw-r--r--",
            [DEFAULTS]: "-rw-r--r--",
            "/usr/share/doc/vncauthproxy/copyright": "-rw-r--r--",
            "/usr/share/doc/vncauthproxy/changelog.gz": "-rw-r--r--",
            "/usr/share/lintian/overrides/vncauthproxy": "-rw-r--r--",
          };
          for (const [name, mode] of Object.entries(expected)) {
            assert.equal(entries.get(name)?.mode, mode, `${name} in\n${contents}`);
          }
          assert.doesNotMatch(contents, /^\S+ (?!root\/root )/m, "only root/root");

          const field = async (name: string) =>
            (await runOk("dpkg-deb", ["--field", debFile, name])).trim();
          // The runtime's shared libraries (dpkg-shlibdeps), beside adduser.
          const depends = (await field("Depends")).split(", ");
          assert.ok(depends.includes("adduser"), depends.join(", "));
          assert.ok(depends.some((d) => /^libc6 \(>= [\d.]+\)$/.test(d)), depends.join(", "));
          // Installed-Size: the files' KiB, the 95 MB runtime included, plus
          // at most a few KiB per directory and file.
          const fileKib = [...entries.values()].reduce((sum, entry) => sum + entry.size, 0) / 1024;
          const size = Number(await field("Installed-Size"));
          assert.ok(entries.get(`${LIB}/deno`)!.size > 50_000_000, "the runtime is in the package");
          assert.ok(size >= fileKib && size <= fileKib + 4 * entries.size, `${size} vs ${fileKib}`);
          assert.match(
            await field("Description"),
            new RegExp(`Deno ${escapeRegExp(denoVersion)} runtime`),
          );
        },
      );

      await step(
        "lintian: no errors or warnings, and every override is used on the runtime",
        async () => {
          const result = await run("lintian", [
            "--pedantic",
            "--display-info",
            "--display-experimental",
            "--show-overrides",
            debFile,
          ]);
          const output = result.stdout + result.stderr;
          const tags = result.stdout.split("\n").filter((line) => /^[EWIXPO]: /.test(line));
          assert.deepEqual(tags.filter((line) => /^[EW]: /.test(line)), [], output);
          assert.ok(tags.every((line) => !/(unused|mismatched)-override/.test(line)), output);
          const overridden = tags.filter((line) => line.startsWith("O: "));
          assert.ok(overridden.length > 0, output);
          for (const line of overridden) assert.match(line, /\[usr\/lib\/vncauthproxy\/deno\]$/);
        },
      );

      let uid = 0;
      await step("dpkg -i installs the runtime, the bundle and a launcher using them", async () => {
        await runOk("dpkg", ["--install", debFile]);
        uid = Number((await runOk("getent", ["passwd", USER])).split(":")[2]);
        await Deno.chown(serviceHome, uid, null);
        assert.equal((await Deno.stat(`${STATE}/users`)).size, 0);

        const launcher = await Deno.readTextFile("/usr/bin/vncauthproxy");
        assert.match(launcher, /^#!\/bin\/sh\n/);
        const exec = launcher.split("\n").filter((line) => line.startsWith("exec "));
        assert.equal(exec.length, 1, launcher);
        const words = exec[0]!.split(" ");
        assert.deepEqual(words.slice(0, 3), ["exec", `${LIB}/deno`, "run"]);
        assert.deepEqual(words.slice(-2), [`${LIB}/vncauthproxy.js`, '"$@"']);
        const flags = words.slice(3, -2);
        for (const flag of ["--no-prompt", "--cached-only", "--no-config", "--no-remote"]) {
          assert.ok(flags.includes(flag), `${flag} in ${exec[0]}`);
        }
        assert.deepEqual(
          flags.filter((flag) => /^--(allow|deny)-/.test(flag)),
          await compilePermissions(),
          "exactly the compile task's permissions",
        );
        assert.ok(flags.every((flag) => flag.startsWith("--")), exec[0]);
        assert.ok(!/\/usr\/bin\/deno|node_modules/.test(launcher), launcher);
        // Deno's cache: a path below a device file, which nobody can create.
        assert.match(launcher, /^DENO_DIR=\/dev\/null\/\S+$/m);
      });

      await step("deno is hidden: the package's own runtime is the only one left", async () => {
        // With /usr/bin on PATH, as a shell would have it: no deno runs.
        const denoRuns = await run(
          "unshare",
          withoutDeno(["/bin/sh", "-c", "deno --version"], {
            env: { PATH: "/usr/sbin:/usr/bin:/sbin:/bin" },
          }),
        );
        assert.notEqual(denoRuns.code, 0, denoRuns.stdout);
        for (const host of hostDenos()) {
          const direct = await run("unshare", withoutDeno([host, "--version"], { env: {} }));
          assert.notEqual(direct.code, 0, `${host} still runs: ${direct.stdout}`);
        }
        const noneOnPath = await run(
          "unshare",
          withoutDeno(["/bin/sh", "-c", "command -v deno"], { env: rootEnv }),
        );
        assert.notEqual(noneOnPath.code, 0, noneOnPath.stdout);
        assert.equal(noneOnPath.stdout, "");
        const own = await runOk("unshare", withoutDeno([`${LIB}/deno`, "--version"], { env: {} }));
        assert.match(own, new RegExp(`^deno ${escapeRegExp(denoVersion)} `));
      });

      await step("offline, vncauthproxy --help and vncauthproxy passwd add work", async () => {
        const hidden = { env: rootEnv, offline: true };
        const help = await run("unshare", withoutDeno(["/usr/bin/vncauthproxy", "--help"], hidden));
        assert.equal(help.code, 0, help.stderr);
        assert.match(help.stdout, /^Usage: vncauthproxy \[serve\] \[options\]/);
        assert.equal(help.stderr, "", "nothing from Deno on stderr");
        const add = await run(
          "unshare",
          withoutDeno(
            [
              "/usr/bin/vncauthproxy",
              "passwd",
              "add",
              "-p",
              CONTROL_PASSWORD,
              `${STATE}/users`,
              "admin",
            ],
            hidden,
          ),
        );
        assert.equal(add.code, 0, add.stdout + add.stderr);
        assert.match(await Deno.readTextFile(`${STATE}/users`), /^admin:\$6\$[^:\n]+\n$/);
        const users = await Deno.stat(`${STATE}/users`);
        assert.equal(users.mode! & 0o7777, 0o640, "mode kept");
        assert.equal(users.uid, 0, "owner kept");
      });

      await step(
        "the unit's ExecStart serves Xvnc to gvnccapture through vncauthproxy-client's forwarding",
        async () => {
          await using xvnc = await startXvnc({ geometry: "64x48", color: DESKTOP });
          const service = await unitRun();
          assert.equal(service.user, USER);
          assert.equal(service.argv[0], "/usr/bin/vncauthproxy");
          assert.ok(service.argv.includes("--listen-address=127.0.0.1"), service.argv.join(" "));
          const pool = randomPool(20);
          daemon = new Deno.Command("unshare", {
            args: withoutDeno([
              ...service.argv,
              // Test-only: beside a real daemon on 24999, and a safe pool
              // on loopback only.
              "--listen-port=0",
              "--proxy-listen-address=127.0.0.1",
              `--min-port=${pool.min}`,
              `--max-port=${pool.max}`,
            ], { env: { ...service.env, PATH: path, HOME: serviceHome }, user: service.user }),
            cwd: "/",
            clearEnv: true,
            env: { PATH: "/usr/sbin:/usr/bin:/sbin:/bin" },
            stdin: "null",
            stdout: "null",
            stderr: "piped",
          }).spawn();
          const log = collectLines(daemon.stderr);
          const ready = await log.waitFor(/Listening for control connections on /);
          const controlPort = Number(/127\.0\.0\.1:(\d+)/.exec(ready)![1]);

          const client = await run(
            "unshare",
            withoutDeno([
              "/usr/bin/vncauthproxy-client",
              ...["--server-port", String(controlPort), "-d", "127.0.0.1", "-p", String(xvnc.port)],
              ...["-P", VNC_PASSWORD, "--auth-user", "admin", "--auth-password", CONTROL_PASSWORD],
            ], { env: rootEnv }),
          );
          assert.equal(client.code, 0, client.stdout + client.stderr + log.text());
          const forwarded = /^Forwarding 127\.0\.0\.1:(\d+) -> 127\.0\.0\.1:\d+: OK$/m.exec(
            client.stdout,
          );
          assert.ok(forwarded, client.stdout);

          const image = await captureVnc({
            host: "127.0.0.1",
            port: Number(forwarded[1]),
            password: VNC_PASSWORD,
            timeoutMs: 20_000,
          });
          assert.equal(image.width, 64);
          assert.equal(image.height, 48);
          for (const [x, y] of [[0, 0], [63, 47], [32, 24]] as const) {
            assert.deepEqual(image.pixel(x, y), parseHexColor(DESKTOP), `pixel ${x},${y}`);
          }
          await log.waitFor(/Session ended/);
          const ps = (format: string) => runOk("ps", ["-o", format, "-p", String(daemon!.pid)]);
          assert.equal((await ps("user=")).trim(), USER, "runs as the service user");
          const args = (await ps("args=")).trim();
          assert.ok(args.startsWith(`${LIB}/deno run `), `runs the package's runtime: ${args}`);
          daemon.kill("SIGTERM");
          assert.equal((await daemon.status).code, 0, log.text());
          await log.done;
          daemon = undefined;
          assert.ok(!log.text().includes(CONTROL_PASSWORD) && !log.text().includes(VNC_PASSWORD));

          assert.deepEqual(await namesIn(STATE), ["users"], "nothing but the users file");
          assert.deepEqual(await namesIn(serviceHome), [], "nothing in the service's HOME");
          assert.deepEqual(await namesIn(rootHome), [], "nothing in root's HOME");
        },
      );

      await step("systemd-analyze verify accepts the unit and its launcher", async () => {
        const result = await run("systemd-analyze", ["verify", UNIT]);
        assert.equal(result.code, 0, result.stdout + result.stderr);
        assert.equal(result.stderr.trim(), "", "no warnings");
      });

      await step("dpkg -r keeps the data and the user, and removes the runtime", async () => {
        await assertRemoveKeepsData(/^admin:/);
        await assert.rejects(Deno.stat(LIB), Deno.errors.NotFound);
      });

      await step(
        "dpkg -P removes the data, the conffile, the user and the group",
        assertPurgeRemovesAll,
      );
    } finally {
      await cleanUpInstall(daemon, work);
    }
  },
});
