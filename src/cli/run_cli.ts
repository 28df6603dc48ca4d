/**
 * Subcommand dispatch: the daemon (default), `passwd`, `client`, `demo`, `status`, and the
 * compatibility entry points of snf's separate tools. Only this module and
 * `main.ts` decide exit codes.
 *
 * @module
 */

import { UsageError } from "../errors.ts";
import { type CliIo, processIo } from "./cli_io.ts";
import { runClientCommand } from "./client_command.ts";
import { runDemoCommand } from "./demo_command.ts";
import { runLegacyPasswdCommand, runPasswdCommand, terminalPasswdIo } from "./passwd_command.ts";
import { runServeCommand } from "./serve_command.ts";
import { runStatusCommand } from "./status_command.ts";

const COMMANDS = [
  "serve",
  "passwd",
  "client",
  "demo",
  "status",
  "legacy-passwd",
  "legacy-client",
] as const;

/**
 * Runs the command line `args` and returns the exit code: 0 on success,
 * 1 on failure, 2 on a usage error.
 */
export async function runCli(args: readonly string[], io: CliIo = processIo): Promise<number> {
  const [first, ...rest] = args;
  const command = (COMMANDS as readonly string[]).includes(first ?? "") ? first! : "serve";
  const commandArgs = command === first ? rest : args;
  try {
    switch (command) {
      case "passwd":
        return await runPasswdCommand([...commandArgs], { ...terminalPasswdIo(), ...io });
      case "legacy-passwd":
        return await runLegacyPasswdCommand([...commandArgs], { ...terminalPasswdIo(), ...io });
      case "client":
      case "legacy-client":
        return await runClientCommand(commandArgs, io);
      case "demo":
        return await runDemoCommand(commandArgs, io);
      case "status":
        return await runStatusCommand(commandArgs, io);
      default:
        return await runServeCommand(commandArgs, io);
    }
  } catch (error) {
    if (error instanceof UsageError) {
      const hint = command === "serve" ? "vncauthproxy --help" : `vncauthproxy ${command} --help`;
      io.stderr(`vncauthproxy: ${error.message}\nTry "${hint}" for more information.\n`);
      return 2;
    }
    throw error;
  }
}
