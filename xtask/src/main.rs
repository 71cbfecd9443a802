//! Project tasks, run as `cargo xtask <task>` (alias in `.cargo/config.toml`).
//!
//! - `ci`: every check CI runs, in order, stopping at the first failure.
//! - `demo [--seconds N]`: the project demo (`roundrobin-proxy`'s `demo` example).
//! - `bench [ARGS..]`: the criterion benches (`benches/`), peers included.
//! - `bench-proxy [--seconds N] [--concurrency C] [--target NAME=URL]..`: requests/s
//!   and latency through the balancer vs straight to the backend, as a markdown table.
//! - `bench-proxy --peers [--protocols http,https,h2c] [--seconds N] [--rounds N]
//!   [--concurrency C].. [--h2-streams M] [--idle-conns N] [--instructions REQUESTS]
//!   [--install] [ARGS..]`: the release proxy binary vs nginx and HAProxy, over
//!   HTTP/1.1 (wrk), HTTPS terminated by the balancer (wrk) and cleartext HTTP/2
//!   (h2load), and with `--instructions` user-space instructions per request counted
//!   by callgrind; needs nginx, haproxy, wrk, h2load (`nghttp2-client`), openssl and
//!   for `--instructions` valgrind (`--install` apt-gets them).
//! - `dist [--no-pgo] [--seconds N]`: the proxy binary for operators in
//!   `target/dist/roundrobin-proxy`, built with profile-guided optimisation: an
//!   instrumented build, a training run of N seconds a phase (the `pgo_train` example),
//!   then the release build again with the profile; needs rustup's `llvm-tools`
//!   component (added when missing). `--no-pgo`: the plain release build.
//! - `bench-proxy --peers --pgo [ARGS..]`: the same, plus rows for the `dist` binary.
//! - `fuzz [--seconds N]`: the cookie-decoding fuzz target (nightly + cargo-fuzz).
//! - `chaos [--seconds N]`: the fault scenarios of the test suite, longer, against the
//!   release proxy binary, as a markdown table.
//! - `readme [--check]`: rebuilds the top `README.md` from its head and each crate's
//!   `README.md` (`--check`: fails when it is out of date instead).

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

type Result<T = ()> = core::result::Result<T, String>;

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let (task, rest) = match args.split_first() {
        Some((t, r)) => (t.as_str(), r),
        None => ("help", &[][..]),
    };
    let result = match task {
        "ci" => ci(),
        "demo" => demo(rest),
        "bench" => bench(rest),
        "bench-proxy" => bench_proxy(rest),
        "dist" => dist(rest).map(|bin| eprintln!("\nthe proxy binary: {}", bin.display())),
        "fuzz" => fuzz(rest),
        "readme" => readme(rest),
        "chaos" => chaos(rest),
        "help" | "--help" | "-h" => {
            println!(
                "usage: cargo xtask <ci|demo|bench|bench-proxy|dist|chaos|fuzz|readme> [args..]"
            );
            println!(
                "  bench-proxy --peers [--protocols http,https,h2c] [--seconds N] [--rounds N] \
                 [--idle-conns N] [--instructions REQUESTS] [--pgo] [--install]: proxy vs nginx \
                 and HAProxy (--help for more)"
            );
            println!(
                "  dist [--no-pgo] [--seconds N]: the proxy binary, built with profile-guided \
                 optimisation, in target/dist/"
            );
            Ok(())
        }
        other => Err(format!("unknown task `{other}`; try `cargo xtask help`")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

fn cargo() -> Command {
    let mut cmd = Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root());
    cmd
}

fn run(step: &str, cmd: &mut Command) -> Result {
    eprintln!("\n==> {step}");
    let status = cmd
        .status()
        .map_err(|e| format!("{step}: cannot start: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{step}: failed ({status})"))
    }
}

fn has(program: &str, arg: &str) -> bool {
    Command::new(program)
        .arg(arg)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Installs the system tools the checks need when a fresh machine lacks them:
/// `cmake` (the pingora bench peer builds C code with it), `curl` (the example
/// proxy's cookie-jar test drives it) and `chromium` (the admin dashboard's browser
/// test). Uses apt-get, which needs root.
fn setup() -> Result {
    let missing: Vec<&str> = ["cmake", "curl", "chromium"]
        .into_iter()
        .filter(|tool| !has(tool, "--version"))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !has("apt-get", "--version") {
        return Err(format!("please install {}", missing.join(" and ")));
    }
    run(
        "apt-get update",
        Command::new("apt-get").args(["update", "-qq"]),
    )?;
    run(
        &format!("install {}", missing.join(" ")),
        Command::new("apt-get")
            .args(["install", "-y", "-qq"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

fn ci() -> Result {
    setup()?;
    run("fmt", cargo().args(["fmt", "--all", "--check"]))?;
    eprintln!("\n==> README.md is built from the crates' READMEs");
    readme(&["--check".to_owned()])?;
    run(
        "clippy",
        cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    if has("cargo-nextest", "--version") {
        // Doctests first, so the nextest summary is the run's closing test line.
        run("doctests", cargo().args(["test", "--workspace", "--doc"]))?;
        run(
            "tests (nextest)",
            cargo().args(["nextest", "run", "--workspace", "--no-fail-fast"]),
        )?;
    } else {
        run("tests", cargo().args(["test", "--workspace"]))?;
    }
    run(
        "docs",
        cargo()
            .args(["doc", "--workspace", "--no-deps"])
            .env("RUSTDOCFLAGS", "-D warnings"),
    )?;
    let target = "x86_64-unknown-none";
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains(target))
        .unwrap_or(false);
    if !installed {
        run(
            "install no_std target",
            Command::new("rustup").args(["target", "add", target]),
        )?;
    }
    run(
        "no_std build of roundrobin-core",
        cargo().args([
            "build",
            "-p",
            "roundrobin-core",
            "--no-default-features",
            "--target",
            target,
        ]),
    )?;
    run(
        "benches compile",
        cargo().args(["check", "--workspace", "--benches"]),
    )?;
    // Each library crate and the binary must stay publishable on its own: package them
    // (sibling crates resolved from the local packages) and build each package alone.
    forget_packaged_siblings();
    run(
        "package",
        cargo().args([
            "package",
            "--workspace",
            "--exclude",
            "xtask",
            "--exclude",
            "roundrobin-benches",
            "--allow-dirty",
        ]),
    )?;
    eprintln!("\nxtask ci: all checks passed");
    Ok(())
}

/// Removes what earlier `cargo package` runs left of this workspace's crates: their
/// unpacked sources in cargo's local staging registry, the verify builds in
/// `target/package`, and the fingerprints of their builds in `target/debug`. Cargo
/// keeps all three by name and version (a registry crate is never rebuilt once built),
/// so a sibling packaged again under the same version would otherwise be verified
/// against its stale copy. Our crates are rebuilt once afterwards; dependencies are not.
fn forget_packaged_siblings() {
    let target =
        env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), PathBuf::from);
    let _ = std::fs::remove_dir_all(target.join("package"));
    remove_our_crates(&target.join("debug").join(".fingerprint"));
    let home = env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    let Some(home) = home else { return };
    for kind in ["src", "cache"] {
        let Ok(registries) = std::fs::read_dir(home.join("registry").join(kind)) else {
            continue;
        };
        for registry in registries.flatten() {
            // The staging registry has no host name: its directory starts with `-`.
            if registry.file_name().to_string_lossy().starts_with('-') {
                remove_our_crates(&registry.path());
            }
        }
    }
}

/// Removes the entries of `dir` named after this workspace's crates (`roundrobin-*`).
fn remove_our_crates(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with("roundrobin-")
        {
            let path = entry.path();
            let _ = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
        }
    }
}

/// The demo; its arguments pass through (`--seconds N`, `--web` for the dashboard).
fn demo(args: &[String]) -> Result {
    run(
        "demo",
        cargo()
            .args([
                "run",
                "--release",
                "-p",
                "roundrobin-proxy",
                "--example",
                "demo",
                "--",
            ])
            .args(args),
    )
}

fn bench_proxy(args: &[String]) -> Result {
    if args.iter().any(|a| a == "--peers") {
        return bench_peers(args);
    }
    run(
        "proxy benchmark",
        cargo()
            .args([
                "run",
                "--release",
                "--quiet",
                "-p",
                "roundrobin-benches",
                "--bin",
                "bench_proxy",
                "--",
            ])
            .args(args),
    )
}

/// `bench-proxy --peers [ARGS..]`: our proxy binary vs nginx and HAProxy over
/// HTTP/1.1, HTTPS and h2c, with wrk and h2load (`benches/src/bin/bench_peers.rs`;
/// `--protocols http,https,h2c` picks the row groups, `--help` lists the rest). Builds the proxy first (`roundrobin-proxy`
/// once `crates/proxy` exists, else the `proxy` example) and passes it as
/// `--proxy-bin`, unless ARGS name one.
fn bench_peers(args: &[String]) -> Result {
    let pgo = args.iter().any(|a| a == "--pgo");
    let args: Vec<&String> = args
        .iter()
        .filter(|a| *a != "--peers" && *a != "--pgo")
        .collect();
    let mut proxy_bin = Vec::new();
    if pgo {
        let bin = dist(&[])?;
        proxy_bin.extend(["--pgo-bin".into(), bin.into_os_string()]);
    }
    if !args.iter().any(|a| a.starts_with("--proxy-bin")) {
        let target = target_dir();
        let mut build = cargo();
        build.args(["build", "--release", "--quiet"]);
        let bin = if root().join("crates/proxy").is_dir() {
            build.args(["-p", "roundrobin-proxy"]);
            "release/roundrobin-proxy"
        } else {
            build.args(["-p", "roundrobin-hyper", "--example", "proxy"]);
            "release/examples/proxy"
        };
        run("build the proxy", &mut build)?;
        proxy_bin.extend(["--proxy-bin".into(), target.join(bin).into_os_string()]);
    }
    run(
        "proxy vs nginx and HAProxy",
        cargo()
            .args([
                "run",
                "--release",
                "--quiet",
                "-p",
                "roundrobin-benches",
                "--bin",
                "bench_peers",
                "--",
            ])
            .args(proxy_bin)
            .args(args),
    )
}

/// The cargo target directory (`CARGO_TARGET_DIR`, relative to the workspace root, or
/// `target`).
fn target_dir() -> PathBuf {
    env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), |dir| root().join(dir))
}

/// Seconds of each phase of the PGO training run (`dist --seconds N`).
const TRAIN_SECONDS: u64 = 4;

/// `dist [--no-pgo] [--seconds N]`: builds the proxy binary operators run and returns
/// its path, `target/dist/roundrobin-proxy`.
///
/// With profile-guided optimisation (the default): the binary is built instrumented
/// (`-Cprofile-generate`, in `target/pgo/generate`), the `pgo_train` example runs it
/// through plain, full-balancer and TLS traffic on loopback (N seconds a phase), the
/// profiles it wrote are merged with `llvm-profdata`, and the binary is built again
/// with them (`-Cprofile-use`, in `target/pgo/use`). Both builds name the host target,
/// so the flags reach the binary's code and not build scripts or proc macros. The
/// profile of an unchanged instrumented build is reused: run again on the same sources,
/// `dist` trains and builds nothing.
fn dist(args: &[String]) -> Result<PathBuf> {
    let mut pgo = true;
    let mut seconds = TRAIN_SECONDS;
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--no-pgo" => pgo = false,
            "--seconds" => {
                seconds = rest
                    .next()
                    .and_then(|s| s.parse().ok())
                    .filter(|&s| s > 0)
                    .ok_or("--seconds takes a whole number of seconds, at least 1")?;
            }
            other => return Err(format!("dist: unknown argument `{other}`")),
        }
    }
    let target = target_dir();
    let dist = target.join("dist");
    std::fs::create_dir_all(&dist).map_err(|e| format!("{}: {e}", dist.display()))?;
    let out = dist.join("roundrobin-proxy");
    if !pgo {
        run(
            "build the proxy",
            cargo().args(["build", "--release", "--quiet", "-p", "roundrobin-proxy"]),
        )?;
        copy(&target.join("release/roundrobin-proxy"), &out)?;
        return Ok(out);
    }
    let host = rustc_line(&["-vV"], "host: ")?;
    let profdata = llvm_profdata(&host)?;
    let pgo_dir = target.join("pgo");
    let profiles = pgo_dir.join("profiles");
    let build = |dir: &str, flag: String| {
        let mut cmd = cargo();
        cmd.args(["build", "--release", "--quiet", "-p", "roundrobin-proxy"])
            .args(["--target", &host])
            .env("CARGO_TARGET_DIR", pgo_dir.join(dir))
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env(
                "RUSTFLAGS",
                match env::var("RUSTFLAGS") {
                    Ok(user) if !user.trim().is_empty() => format!("{user} {flag}"),
                    _ => flag,
                },
            );
        cmd
    };
    let binary = |dir: &str| {
        pgo_dir
            .join(dir)
            .join(&host)
            .join("release/roundrobin-proxy")
    };
    run(
        "build the instrumented proxy",
        &mut build(
            "generate",
            format!("-Cprofile-generate={}", profiles.display()),
        ),
    )?;
    // The profile is named by the instrumented binary it was trained on (and the
    // training's length): unchanged sources keep their profile, and cargo its build
    // with it; a new binary gets a new name, so the flags change and cargo rebuilds (it
    // does not track the file itself).
    let trained = binary("generate");
    let bytes = std::fs::read(&trained).map_err(|e| format!("{}: {e}", trained.display()))?;
    let named = pgo_dir.join(format!("proxy-{:016x}-{seconds}s.profdata", fnv1a(&bytes)));
    if named.is_file() {
        eprintln!(
            "\n==> the profile of this instrumented build: {}",
            named.display()
        );
    } else {
        train(&profdata, &trained, seconds, &profiles, &named)?;
    }
    run(
        "build the proxy with the profile",
        &mut build("use", format!("-Cprofile-use={}", named.display())),
    )?;
    copy(&binary("use"), &out)?;
    Ok(out)
}

/// Runs the `pgo_train` example against the instrumented binary `trained` (`seconds` a
/// phase), its raw profiles going to `profiles`, and merges them into `profile`, in
/// place of any earlier profile beside it.
fn train(profdata: &Path, trained: &Path, seconds: u64, profiles: &Path, profile: &Path) -> Result {
    let pgo_dir = profile.parent().ok_or("the profile has no directory")?;
    let _ = std::fs::remove_dir_all(profiles);
    std::fs::create_dir_all(profiles).map_err(|e| format!("{}: {e}", profiles.display()))?;
    run(
        "train it (the pgo_train example)",
        cargo()
            .args(["run", "--release", "--quiet", "-p", "roundrobin-proxy"])
            .args(["--example", "pgo_train", "--"])
            .arg(trained)
            .arg(seconds.to_string())
            .env("LLVM_PROFILE_FILE", profiles.join("proxy-%p.profraw")),
    )?;
    let raw: Vec<PathBuf> = std::fs::read_dir(profiles)
        .map_err(|e| format!("{}: {e}", profiles.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "profraw"))
        .collect();
    if raw.is_empty() {
        return Err(format!(
            "the training wrote no profile in {}",
            profiles.display()
        ));
    }
    for old in std::fs::read_dir(pgo_dir).into_iter().flatten().flatten() {
        if old.path().extension().is_some_and(|x| x == "profdata") {
            let _ = std::fs::remove_file(old.path());
        }
    }
    // Merged under another name first: a merge cut short leaves no profile to reuse.
    let merged = pgo_dir.join("merging.tmp");
    run(
        "merge the profiles",
        Command::new(profdata)
            .args(["merge", "-o"])
            .arg(&merged)
            .args(&raw),
    )?;
    std::fs::rename(&merged, profile).map_err(|e| format!("{}: {e}", profile.display()))
}

/// The line of `rustc ARGS`' output that starts with `prefix`, without it.
fn rustc_line(args: &[&str], prefix: &str) -> Result<String> {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = Command::new(&rustc)
        .args(args)
        .output()
        .map_err(|e| format!("{rustc}: {e}"))?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .map(|l| l.trim().to_owned())
        .ok_or_else(|| format!("`{rustc} {}` printed no `{prefix}` line", args.join(" ")))
}

/// The `llvm-profdata` of the toolchain's LLVM (rustup's `llvm-tools` component, added
/// if it is missing): another LLVM's may not read the profiles.
fn llvm_profdata(host: &str) -> Result<PathBuf> {
    let sysroot = PathBuf::from(rustc_line(&["--print", "sysroot"], "")?);
    let tool = sysroot
        .join("lib/rustlib")
        .join(host)
        .join("bin/llvm-profdata");
    if !tool.is_file() {
        run(
            "add the llvm-tools component (llvm-profdata)",
            Command::new("rustup").args(["component", "add", "llvm-tools"]),
        )
        .map_err(|e| {
            format!(
                "{e}; a PGO build needs {}: `rustup component add llvm-tools`, or pass \
                 --no-pgo",
                tool.display()
            )
        })?;
    }
    if tool.is_file() {
        Ok(tool)
    } else {
        Err(format!(
            "no llvm-profdata at {} (pass --no-pgo)",
            tool.display()
        ))
    }
}

/// The 64-bit FNV-1a hash of `bytes`.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn copy(from: &Path, to: &Path) -> Result {
    std::fs::copy(from, to)
        .map(drop)
        .map_err(|e| format!("copying {} to {}: {e}", from.display(), to.display()))
}

fn bench(args: &[String]) -> Result {
    run(
        "benches",
        cargo()
            .args(["bench", "-p", "roundrobin-benches", "--"])
            .args(args),
    )
}

fn fuzz(args: &[String]) -> Result {
    let mut seconds = 60u64;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--seconds" => {
                seconds = it
                    .next()
                    .and_then(|s| s.parse().ok())
                    .ok_or("--seconds takes a whole number")?;
            }
            other => return Err(format!("fuzz: unknown argument `{other}`")),
        }
    }
    if !has("cargo-fuzz", "--version") {
        run(
            "install cargo-fuzz",
            cargo().args(["install", "--locked", "cargo-fuzz"]),
        )?;
    }
    run(
        "fuzz cookie decoding",
        // `+nightly` needs the rustup proxy, not the `$CARGO` binary.
        Command::new("cargo")
            .current_dir(root().join("crates/sticky"))
            .args(["+nightly", "fuzz", "run", "decode_cookie", "--"])
            .arg(format!("-max_total_time={seconds}")),
    )
}

/// The crates whose `README.md` make up the top README, in order, after its head.
const README_PARTS: [&str; 5] = ["core", "rebalancer", "sticky", "hyper", "proxy"];

/// Where the head of the top README ends and the crates' sections begin.
const README_SPLIT: &str = "## `roundrobin-core`";

fn readme(args: &[String]) -> Result {
    let check = match args {
        [] => false,
        [flag] if flag == "--check" => true,
        _ => return Err("readme: usage: cargo xtask readme [--check]".into()),
    };
    let path = root().join("README.md");
    let read = |p: &Path| std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()));
    let top = read(&path)?;
    let head = top
        .find(README_SPLIT)
        .map(|i| &top[..i])
        .ok_or_else(|| format!("README.md has no `{README_SPLIT}` section"))?;
    let mut parts = Vec::new();
    for name in README_PARTS {
        let part = read(&root().join("crates").join(name).join("README.md"))?;
        parts.push(part.trim_end().to_owned());
    }
    let built = format!("{head}{}\n", parts.join("\n\n"));
    if built == top {
        return Ok(());
    }
    if check {
        return Err("README.md is out of date: run `cargo xtask readme`".into());
    }
    std::fs::write(&path, built).map_err(|e| format!("README.md: {e}"))
}

fn chaos(args: &[String]) -> Result {
    run(
        "build the release proxy",
        cargo().args(["build", "--release", "--quiet", "-p", "roundrobin-proxy"]),
    )?;
    run(
        "chaos",
        cargo()
            .args([
                "run",
                "--release",
                "--quiet",
                "-p",
                "roundrobin-proxy",
                "--example",
                "chaos",
                "--",
            ])
            .args(args),
    )
}
