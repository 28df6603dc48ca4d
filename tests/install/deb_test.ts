/**
 * The Debian package of the compiled kind: built by install/build-deb.sh
 * around a stand-in executable (a script running main.ts with deno, since
 * the compiled binary cannot be built here), checked with dpkg-deb and
 * lintian, installed, used as the service user would use it, removed and
 * purged. deb_runtime_test.ts proves the runtime kind, which runs without
 * any Deno of the host; the two take turns (lockPackageTests).
 *
 * Installing needs root, dpkg and lintian: on a machine without them the
 * test is ignored and its name says why. It changes the system (package,
 * user, /var/lib/vncauthproxy): run it on disposable CI machines only.
 */

import assert from "node:assert/strict";
import { readExact } from "../../src/io/byte_reader.ts";
import { DAEMON_PERMISSIONS, randomPool, requestForwardingRaw } from "../_util/daemon_process.ts";
import {
  assertPurgeRemovesAll,
  assertRemoveKeepsData,
  cleanUpInstall,
  collectLines,
  lockPackageTests,
  LOGS,
  PACKAGE,
  run,
  runOk,
  STATE,
  USER,
  which,
} from "../_util/deb.ts";
import { startFakeVncServer } from "../_util/fake_vnc_server.ts";
import { connectViewer, readServerInit } from "../_util/test_viewer.ts";

const ROOT = new URL("../../", import.meta.url).pathname;
const MAN_PAGE = `${ROOT}install/vncauthproxy.8`;
const VERSION = "0.0.0~test-1";
const CONTROL_PASSWORD = "c0ntrol-Secret!";
const VNC_PASSWORD = "0neTime8";

/** Why the install test cannot run here, or undefined when it can. */
function missingPrerequisite(): string | undefined {
  if (Deno.build.os !== "linux") return "needs Linux";
  if (Deno.uid() !== 0) return "needs root";
  for (const tool of ["dpkg", "dpkg-deb", "lintian", "adduser", "setpriv", "getent"]) {
    if (!which(tool)) return `needs ${tool}`;
  }
  return undefined;
}

/** The `--flags` a help text mentions. */
function flagsOf(help: string): string[] {
  return [...new Set(help.match(/--[a-z][a-z-]*/g) ?? [])];
}

Deno.test("install/vncauthproxy.8 documents every flag of --help and is valid groff", async () => {
  const page = await Deno.readTextFile(MAN_PAGE);
  const helps = [
    [],
    ["passwd"],
    ["client"],
    ["demo"],
    ["status"],
    ["legacy-passwd"],
    ["legacy-client"],
  ];
  for (const command of helps) {
    const help = await runOk(Deno.execPath(), [
      "run",
      ...DAEMON_PERMISSIONS,
      `${ROOT}main.ts`,
      ...command,
      "--help",
    ]);
    const flags = flagsOf(help);
    assert.ok(flags.length > 0, help);
    for (const flag of flags) {
      assert.ok(
        page.includes(flag.replaceAll("-", "\\-")),
        `vncauthproxy ${command.join(" ")} ${flag} is not in install/vncauthproxy.8`,
      );
    }
  }
  if (which("groff")) {
    const check = await run("groff", ["-man", "-ww", "-z", MAN_PAGE]);
    assert.equal(check.code, 0);
    assert.equal(check.stderr, "", "groff warnings");
  }
});

const missing = missingPrerequisite();

Deno.test({
  name: missing === undefined
    ? "the .deb builds, passes lintian, installs, serves as its user, and purges cleanly"
    : `IGNORED (${missing}): the .deb builds, passes lintian, installs, serves and purges`,
  ignore: missing !== undefined,
  async fn(t) {
    using _turn = await lockPackageTests();
    const work = await Deno.makeTempDir({ prefix: "vap-deb-" });
    await Deno.chmod(work, 0o755);
    // Deno's cache, per user: the installed stand-in runs deno as root and
    // as the service user. Its HOME (/var/lib/vncauthproxy) must stay clean.
    const rootDenoDir = `${work}/deno-root`;
    const userDenoDir = `${work}/deno-user`;
    const denoEnv = (dir: string) => ({ DENO_DIR: dir, DENO_NO_UPDATE_CHECK: "1" });
    let daemon: Deno.ChildProcess | undefined;
    try {
      await run("dpkg", ["--purge", PACKAGE]); // a previous run may have left it

      const step = async (name: string, fn: () => Promise<void>) => {
        if (!await t.step(name, fn)) throw new Error(`Stopped after the failed step "${name}"`);
      };
      await step("build-deb.sh makes the package", async () => {
        const standIn = `${work}/vncauthproxy`;
        await Deno.writeTextFile(
          standIn,
          `#!/bin/sh\nexec ${Deno.execPath()} run --no-config ${
            DAEMON_PERMISSIONS.join(" ")
          } ${ROOT}main.ts "$@"\n`,
          { mode: 0o755 },
        );
        const out = await runOk(`${ROOT}install/build-deb.sh`, [VERSION, standIn, work], {
          SOURCE_DATE_EPOCH: "1767225600",
        });
        assert.equal(out.trim(), `${work}/${PACKAGE}_${VERSION}_amd64.deb`);
      });
      const debFile = `${work}/${PACKAGE}_${VERSION}_amd64.deb`;

      await step("dpkg-deb: contents and control fields", async () => {
        const contents = await runOk("dpkg-deb", ["--contents", debFile]);
        const entries = new Map(
          contents.trim().split("\n").map((line) => {
            const fields = line.split(/\s+/);
            return [fields[5]!.replace(/^\.\//, "/").replace(/\/$/, ""), fields[0]!];
          }),
        );
        const expected: Record<string, string> = {
          "/usr/bin/vncauthproxy": "-rwxr-xr-x",
          "/usr/sbin/vncauthproxy": "lrwxrwxrwx",
          "/usr/bin/vncauthproxy-passwd": "-rwxr-xr-x",
          "/usr/bin/vncauthproxy-client": "-rwxr-xr-x",
          "/lib/systemd/system/vncauthproxy.service": "-rw-r--r--",
          "/etc/default/vncauthproxy": "-rw-r--r--",
          "/usr/share/man/man8/vncauthproxy.8.gz": "-rw-r--r--",
          "/usr/share/man/man8/vncauthproxy-passwd.8.gz": "lrwxrwxrwx",
          "/usr/share/man/man8/vncauthproxy-client.8.gz": "lrwxrwxrwx",
          "/usr/share/doc/vncauthproxy/copyright": "-rw-r--r--",
          "/usr/share/doc/vncauthproxy/changelog.Debian.gz": "-rw-r--r--",
          "/usr/share/lintian/overrides/vncauthproxy": "-rw-r--r--",
        };
        for (const [path, mode] of Object.entries(expected)) {
          assert.equal(entries.get(path), mode, `${path} in\n${contents}`);
        }
        assert.match(contents, /^\S+ root\/root /m, "files owned by root");
        assert.doesNotMatch(contents, /^\S+ (?!root\/root )/m, "only root/root");

        const field = async (name: string) =>
          (await runOk("dpkg-deb", ["--field", debFile, name])).trim();
        assert.equal(await field("Package"), PACKAGE);
        assert.equal(await field("Version"), VERSION);
        assert.equal(await field("Architecture"), "amd64");
        assert.equal(await field("Section"), "net");
        assert.equal(await field("Priority"), "optional");
        assert.match(await field("Maintainer"), /^.+ <.+@.+>$/);
        assert.match(await field("Depends"), /(^|, )adduser(,|$)/);
        for (const name of ["Provides", "Replaces", "Conflicts"]) {
          assert.equal(await field(name), "snf-vncauthproxy");
        }
        assert.match(await field("Description"), /^VNC authentication proxy/);
        assert.equal(
          (await runOk("dpkg-deb", ["--info", debFile, "conffiles"])).trim(),
          "/etc/default/vncauthproxy",
        );
      });

      await step("lintian reports no errors", async () => {
        const result = await run("lintian", ["--pedantic", "--info", debFile]);
        const errors = result.stdout.split("\n").filter((line) => line.startsWith("E:"));
        assert.deepEqual(errors, [], result.stdout + result.stderr);
      });

      await step("dpkg -i creates the user, the directories and an empty users file", async () => {
        await runOk("dpkg", ["--install", debFile]);
        const [, , uid, gid, , home, shell] = (await runOk("getent", ["passwd", USER]))
          .trim().split(":");
        assert.equal(home, STATE);
        assert.equal(shell, "/usr/sbin/nologin");
        assert.equal((await runOk("getent", ["group", USER])).split(":")[2], gid);
        for (const dir of [STATE, LOGS]) {
          const info = await Deno.stat(dir);
          assert.ok(info.isDirectory, dir);
          assert.equal(info.mode! & 0o7777, 0o750, dir);
          assert.equal(info.uid, Number(uid), dir);
          assert.equal(info.gid, Number(gid), dir);
        }
        const users = await Deno.stat(`${STATE}/users`);
        assert.equal(users.size, 0);
        assert.equal(users.mode! & 0o7777, 0o640);
        assert.equal(users.uid, 0);
        assert.equal(users.gid, Number(gid));
        assert.match(
          await Deno.readTextFile("/etc/default/vncauthproxy"),
          /^DAEMON_OPTS="/m,
        );
        await Deno.mkdir(rootDenoDir);
        await Deno.mkdir(userDenoDir);
        await Deno.chown(userDenoDir, Number(uid), Number(gid));
      });

      await step("vncauthproxy --help and vncauthproxy-passwd work", async () => {
        const help = await runOk("/usr/bin/vncauthproxy", ["--help"], denoEnv(rootDenoDir));
        assert.match(help, /^Usage: vncauthproxy \[serve\] \[options\]/);
        await runOk(
          "/usr/bin/vncauthproxy-passwd",
          ["-p", CONTROL_PASSWORD, `${STATE}/users`, "admin"],
          denoEnv(rootDenoDir),
        );
        assert.match(await Deno.readTextFile(`${STATE}/users`), /^admin:\$6\$[^:\n]+\n$/);
        const users = await Deno.stat(`${STATE}/users`);
        assert.equal(users.mode! & 0o7777, 0o640, "mode kept");
        assert.equal(users.uid, 0, "owner kept");
      });

      await step(
        "the daemon, run as vncauthproxy with DAEMON_OPTS, forwards a viewer",
        async () => {
          await using fake = startFakeVncServer({ desktopName: "packaged" });
          const options = (await runOk("sh", [
            "-c",
            '. /etc/default/vncauthproxy && printf %s "$DAEMON_OPTS"',
          ])).split(/\s+/).filter((word) => word !== "");
          assert.ok(options.includes("--listen-address=127.0.0.1"), options.join(" "));
          const pool = randomPool(20);
          // setpriv execs the daemon itself, so signals reach it directly
          // (runuser would sit in between and kill it on SIGTERM).
          daemon = new Deno.Command("setpriv", {
            args: [
              `--reuid=${USER}`,
              `--regid=${USER}`,
              "--init-groups",
              "--",
              "/usr/bin/vncauthproxy",
              ...options,
              // Test-only: beside a real daemon on 24999, and a safe pool.
              "--listen-port=0",
              `--min-port=${pool.min}`,
              `--max-port=${pool.max}`,
            ],
            cwd: "/",
            clearEnv: true,
            env: { PATH: "/usr/bin:/bin", NO_COLOR: "1", ...denoEnv(userDenoDir) },
            stdin: "null",
            stdout: "null",
            stderr: "piped",
          }).spawn();
          const log = collectLines(daemon.stderr);
          const ready = await log.waitFor(/Listening for control connections on /);
          assert.match(ready, /on 127\.0\.0\.1:\d+,/);
          const controlPort = Number(/127\.0\.0\.1:(\d+)/.exec(ready)![1]);
          const reply = await requestForwardingRaw(controlPort, {
            auth_password: CONTROL_PASSWORD,
            source_port: 0,
            destination_port: fake.port,
            password: VNC_PASSWORD,
            type: "vnc",
          });
          assert.equal(reply.status, "OK", JSON.stringify(reply) + log.text());
          const viewer = await connectViewer({ port: reply.source_port, password: VNC_PASSWORD });
          try {
            assert.ok(viewer.ok);
            assert.equal((await readServerInit(viewer.duplex)).name, "packaged");
            await viewer.duplex.write(new TextEncoder().encode("ping"));
            assert.equal(new TextDecoder().decode(await readExact(viewer.duplex, 4)), "ping");
          } finally {
            viewer.duplex.close();
          }
          await log.waitFor(/Session ended/);
          const ps = await runOk("ps", ["-o", "user=", "-p", String(daemon.pid)]);
          assert.equal(ps.trim(), USER, "runs as the service user");
          daemon.kill("SIGTERM");
          assert.equal((await daemon.status).code, 0, log.text());
          await log.done;
          daemon = undefined;
          const state = [];
          for await (const entry of Deno.readDir(STATE)) state.push(entry.name);
          assert.deepEqual(state, ["users"], "nothing but the users file in the state dir");
        },
      );

      await step("systemd-analyze verify accepts the installed unit", async () => {
        if (!which("systemd-analyze")) {
          // deno-lint-ignore no-console
          console.warn("!!! SKIPPED: systemd-analyze is not installed; the unit is not verified");
          return;
        }
        const result = await run("systemd-analyze", [
          "verify",
          "/lib/systemd/system/vncauthproxy.service",
        ]);
        assert.equal(result.code, 0, result.stdout + result.stderr);
        assert.equal(result.stderr.trim(), "", "no warnings");
      });

      await step("dpkg -r keeps the data and the user", () => assertRemoveKeepsData(/^admin:/));

      await step(
        "dpkg -P removes the data, the conffile, the user and the group",
        assertPurgeRemovesAll,
      );
    } finally {
      await cleanUpInstall(daemon, work);
    }
  },
});
