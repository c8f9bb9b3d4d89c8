// OpenCode plugin: every `bash` tool call runs inside `sandbox` (see docs/agents.md).
//
// In tool.execute.before it hands the call to `sandbox hook opencode`, which
// answers with the arguments to use: the same arguments with `command`
// rewritten to `'<sandbox>' sh --workspace '<project>' -- '<command>'`.
// All quoting and checking happens there, in one place. Any failure (sandbox
// not found, a refusal, an unreadable answer) throws, which stops the tool
// call: the command is never run outside the sandbox.
//
// Install: `sandbox install-hook opencode [--project]` writes this file to
// ~/.config/opencode/plugins/ (or the project's .opencode/plugins/) with the
// path of `sandbox` filled in below. By hand: copy it there and set
// SANDBOX_EXE to the absolute path of `sandbox` in OpenCode's environment
// (the variable is read only while the path below is not filled in).

import { spawnSync } from "node:child_process"

const SANDBOX_EXE = "/absolute/path/of/sandbox"

// The path written in by install-hook wins: OpenCode (Bun) loads a project's
// .env, and /proc/self/cwd/... is an absolute path into the project, so a
// cloned repository could otherwise name its own "sandbox" here.
const UNSET = "/absolute/path/of/" + "sandbox"

function sandboxExe() {
  const exe = SANDBOX_EXE !== UNSET ? SANDBOX_EXE : (process.env.SANDBOX_EXE || UNSET)
  if (!exe.startsWith("/") || exe === UNSET || exe.startsWith("/proc/")) {
    throw new Error("sandbox plugin: set SANDBOX_EXE to the absolute path of sandbox " +
                    "(see agents.md in the sandbox docs); the command was not run")
  }
  return exe
}

export const SandboxPlugin = async ({ directory, worktree }) => ({
  "tool.execute.before": async (input, output) => {
    if (input.tool !== "bash") return
    const event = JSON.stringify({ tool: input.tool, args: output.args, directory, worktree })
    const run = spawnSync(sandboxExe(), ["hook", "opencode"],
                          { input: event, encoding: "utf8", timeout: 30000 })
    if (run.error || run.status !== 0) {
      const why = (run.stderr || "").trim() || String(run.error || `exit ${run.status}`)
      throw new Error(`sandbox plugin: ${why}`)
    }
    let answer
    try {
      answer = JSON.parse(run.stdout)
    } catch (err) {
      throw new Error(`sandbox plugin: unreadable answer from sandbox hook (${err}); ` +
                      "the command was not run")
    }
    if (!answer || typeof answer.args !== "object" || typeof answer.args.command !== "string") {
      throw new Error("sandbox plugin: sandbox hook gave no command; the command was not run")
    }
    // Mutate in place: OpenCode keeps its own reference to output.args.
    Object.assign(output.args, answer.args)
  },
})
