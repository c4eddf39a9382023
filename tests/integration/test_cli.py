"""The command line: --help, --version, and a bad config file refused with file, line and setting."""

import os
import subprocess

import harness
from harness import check, check_equal

suite = harness.Suite()
test = suite.test


def run_sluice(*args, timeout=10):
    binary = harness.sluice_binary()
    if not os.access(binary, os.X_OK):
        raise harness.TestFailure(f"sluice binary not found: {binary}")
    try:
        proc = subprocess.run([binary, *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise harness.TestFailure(f"sluice {' '.join(args)} still running after {timeout}s")
    return proc.returncode, proc.stdout + proc.stderr


def scratch_config(text):
    directory = harness.tempfile.mkdtemp(prefix="sluice-cli-")
    path = os.path.join(directory, "bad.ini")
    with open(path, "w") as f:
        f.write(text)
    return path


@test("--help prints usage naming -c and exits 0", sluice_only=True)
def help_option(t):
    status, output = run_sluice("--help")
    check_equal(status, 0, "exit status")
    check("-c" in output, f"usage does not mention -c: {output[:300]!r}")


@test("--version prints the name and version and exits 0", sluice_only=True)
def version_option(t):
    status, output = run_sluice("--version")
    check_equal(status, 0, "exit status")
    check("sluice" in output.lower(), f"output: {output[:200]!r}")
    check(any(ch.isdigit() for ch in output), f"no version number in {output[:200]!r}")


@test("an unknown option exits non-zero", sluice_only=True)
def unknown_option(t):
    status, _ = run_sluice("--no-such-option")
    check(status != 0, "exit status 0 for an unknown option")


@test("a missing config file exits non-zero naming the file", sluice_only=True)
def missing_config(t):
    status, output = run_sluice("-c", "/nonexistent/sluice.ini")
    check(status != 0, "exit status 0 for a missing config file")
    check("/nonexistent/sluice.ini" in output, f"output does not name the file: {output[:300]!r}")


@test("a bad setting exits non-zero naming the file, line and setting", sluice_only=True)
def bad_setting(t):
    path = scratch_config("[sluice]\nlisten_port = 6999\npool_mode = sometimes\n"
                          "[databases]\nappdb = host=127.0.0.1 dbname=appdb\n")
    try:
        status, output = run_sluice("-c", path)
        check(status != 0, "exit status 0 for pool_mode = sometimes")
        check(path in output or "bad.ini" in output, f"file not named: {output[:300]!r}")
        check("3" in output, f"line 3 not named: {output[:300]!r}")
        check("pool_mode" in output, f"setting not named: {output[:300]!r}")
    finally:
        harness.shutil.rmtree(os.path.dirname(path), ignore_errors=True)


@test("a non-numeric number exits non-zero naming the setting", sluice_only=True)
def bad_number(t):
    path = scratch_config("[sluice]\nlisten_port = 6999\ndefault_pool_size = lots\n")
    try:
        status, output = run_sluice("-c", path)
        check(status != 0, "exit status 0 for default_pool_size = lots")
        check("default_pool_size" in output, f"setting not named: {output[:300]!r}")
    finally:
        harness.shutil.rmtree(os.path.dirname(path), ignore_errors=True)


@test("a low soft descriptor limit is raised toward the hard one to fit max_client_conn",
      sluice_only=True)
def descriptor_limit_raised(t):
    import resource
    import time
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < 4000:
        check(False, f"this test needs a hard descriptor limit of 4000 or more, not {hard}")
    directory = harness.tempfile.mkdtemp(prefix="sluice-cli-")
    path = os.path.join(directory, "limits.ini")
    with open(path, "w") as f:
        f.write(f"[sluice]\nlisten_addr = 127.0.0.1\nlisten_port = {harness.free_port()}\n"
                "unix_socket_dir =\nauth_type = trust\nmax_client_conn = 3000\n"
                "[databases]\nappdb = host=127.0.0.1 port=5432\n")

    def lower_soft_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))

    proc = subprocess.Popen([harness.sluice_binary(), "-c", path], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lower_soft_limit)
    try:
        soft = None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and proc.poll() is None:
            with open(f"/proc/{proc.pid}/limits") as limits:
                line = [l for l in limits if l.startswith("Max open files")][0]
            soft = int(line.split()[3])
            if soft > 256:
                break
            time.sleep(0.1)
        check(soft is not None and soft >= 3000, f"soft descriptor limit of sluice: {soft}")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@test("a listen port already in use exits non-zero instead of running deaf", sluice_only=True)
def port_in_use(t):
    blocker = harness.socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen(1)
    port = blocker.getsockname()[1]
    path = scratch_config(f"[sluice]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\n"
                          "unix_socket_dir =\nauth_type = trust\n")
    try:
        status, output = run_sluice("-c", path)
        check(status != 0, "exit status 0 with the port taken")
        check(str(port) in output or "address" in output.lower(),
              f"message does not say what failed: {output[:300]!r}")
    finally:
        blocker.close()
        harness.shutil.rmtree(os.path.dirname(path), ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(suite.run())
