//! `--config FILE`: the flags as TOML keys, and reloading the file's servers.
//!
//! The file is translated into flags, and the command line is parsed again with them:
//! every key is the name of a flag in snake_case (`connect_timeout = "3s"` is
//! `--connect-timeout 3s`), except `servers` (the `--backend` list, strings
//! `"URL[=WEIGHT]"` or tables `{ url = .., weight = .. }`) and `sticky` (a name, or a
//! table of `name`, `codec`, `key`, `salt`, `ttl`). So a value means the same and is
//! checked by the same parser in the file as on the command line, and a flag added
//! later is a key at once. A flag given on the command line wins over its key (clap's
//! [`ValueSource::CommandLine`]): the key is left out, and logged as overridden.
//!
//! A file is checked whole before anything is used: TOML syntax, unknown keys (the
//! tables `servers` and `sticky` deny unknown fields through serde), each key's value
//! on its own, then all the flags together, the sticky codec and the admin token. At
//! start an invalid file exits with status 2; on reload ([`Reloader`]: SIGHUP or
//! `POST /reload`) it is rejected and the running configuration is kept.
//!
//! On reload only the servers change at run time: the file's servers are upserted
//! (added, or reweighted when their configured weight differs; the others keep their
//! meters, cookies and connections), and the servers the last file listed but the new
//! one does not are removed. Servers that no file listed (added by `PUT /servers`,
//! say) are left alone. Any other key whose value changed is reported as needing a
//! restart.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, Command, CommandFactory, FromArgMatches};
use roundrobin_core::ServerUrl;
use roundrobin_hyper::TlsAcceptor;
use roundrobin_rebalancer::Rebalancer;
use serde::{Deserialize, Serialize};
use toml::Value;

use crate::args::{admin_token, check_admin, sticky, usage_error, Args};

/// Argument ids that are not keys: the file itself, clap's own, and `backends`
/// (the key is `servers`).
const NOT_KEYS: [&str; 4] = ["config", "help", "version", "backends"];

/// The flags a file gives, by argument id (in the file's order within one id).
type Flags = BTreeMap<String, Vec<OsString>>;

/// One table of `servers`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerEntry {
    url: String,
    weight: Option<u32>,
}

/// The `[sticky]` table.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StickyTable {
    name: Value,
    codec: Option<Value>,
    key: Option<Value>,
    salt: Option<Value>,
    ttl: Option<Value>,
}

/// The command line and the file, as the process started with them.
#[derive(Debug)]
pub(crate) struct Source {
    path: PathBuf,
    argv: Vec<OsString>,
    /// Ids of the flags given on the command line: their keys are left out.
    given: BTreeSet<String>,
    /// The file's flags the process runs with.
    running: Flags,
    /// The file's keys that a flag overrode.
    overridden: Vec<String>,
}

/// A file read and checked key by key.
struct Read {
    flags: Flags,
    overridden: Vec<String>,
}

/// The command line with the keys of `--config FILE` where no flag was given. Exits
/// with status 2 and a message when the file is unreadable or invalid.
pub(crate) fn parse() -> (Args, Option<Source>) {
    let argv: Vec<OsString> = std::env::args_os().collect();
    // `requires` is checked once the file's keys are in (`--admin` may come from it)
    let matches = lenient().get_matches_from(&argv);
    let Some(path) = matches.get_one::<PathBuf>("config").cloned() else {
        let args = Args::from_arg_matches(&Args::command().get_matches_from(&argv))
            .unwrap_or_else(|e| e.exit());
        return (args, None);
    };
    let given: BTreeSet<String> = matches
        .ids()
        .map(clap::Id::as_str)
        .filter(|id| matches.value_source(id) == Some(ValueSource::CommandLine))
        .map(str::to_owned)
        .collect();
    let read = read(&path, &given).unwrap_or_else(|e| usage_error(&e));
    let args = merge(&argv, &read.flags)
        .and_then(|args| no_duplicates(&args, &given).map(|()| args))
        .unwrap_or_else(|e| usage_error(&format!("--config {}: {e}", path.display())));
    let source = Source {
        path,
        argv,
        given,
        running: read.flags,
        overridden: read.overridden,
    };
    (args, Some(source))
}

/// The flags without their `requires`, to read the command line or one key alone.
fn lenient() -> Command {
    Args::command().mut_args(|arg| arg.requires(clap::builder::Resettable::<clap::Id>::Reset))
}

/// The key of an argument id.
fn key_of(id: &str) -> String {
    match id {
        "backends" => "servers".to_owned(),
        id => id.to_owned(),
    }
}

fn read(path: &Path, given: &BTreeSet<String>) -> Result<Read, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("--config {}: cannot read it: {e}", path.display()))?;
    parse_file(&text, given).map_err(|e| format!("--config {}: {e}", path.display()))
}

/// The flags of a file's text, each key checked alone; the keys whose ids are in
/// `given` are left out.
fn parse_file(text: &str, given: &BTreeSet<String>) -> Result<Read, String> {
    let table: toml::Table = toml::from_str(text).map_err(|e| syntax_error(text, &e))?;
    let command = lenient();
    let mut unknown = Vec::new();
    let mut flags = Flags::new();
    let mut overridden = Vec::new();
    for (key, value) in &table {
        let entries = match key.as_str() {
            "servers" => vec![("backends".to_owned(), servers(value)?)],
            "sticky" => sticky_flags(&command, value)?,
            _ => match command
                .get_arguments()
                .find(|a| a.get_id() == key && !NOT_KEYS.contains(&key.as_str()))
            {
                Some(arg) => vec![(key.clone(), flag(arg, key, value)?)],
                None => {
                    unknown.push(format!("`{key}`"));
                    continue;
                }
            },
        };
        for (id, args) in entries {
            if given.contains(&id) {
                overridden.push(key_of(&id));
            } else if !args.is_empty() && flags.insert(id.clone(), args).is_some() {
                return Err(format!(
                    "`{id}` is given twice (as `{id}` and in the `sticky` table)"
                ));
            }
        }
    }
    if !unknown.is_empty() {
        return Err(format!(
            "unknown key{} {}: a key is a flag's name in snake_case (`connect_timeout` for \
             --connect-timeout), `servers` or `sticky`",
            if unknown.len() == 1 { "" } else { "s" },
            unknown.join(", ")
        ));
    }
    for (id, args) in &flags {
        if id != "backends" {
            check(&command, &key_of(id), args)?;
        }
    }
    Ok(Read { flags, overridden })
}

/// `line L, column C: message` (TOML's own message spans several lines).
fn syntax_error(text: &str, e: &toml::de::Error) -> String {
    let Some(span) = e.span() else {
        return e.message().to_owned();
    };
    let before = &text[..span.start.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    format!("line {line}, column {column}: {}", e.message().trim())
}

/// Parses `args` alone: the message names `key`.
fn check(command: &Command, key: &str, args: &[OsString]) -> Result<(), String> {
    let argv = core::iter::once(OsString::from("roundrobin-proxy")).chain(args.iter().cloned());
    match command.clone().try_get_matches_from(argv) {
        Ok(_) => Ok(()),
        Err(e) => Err(format!("`{key}`: {}", clap_message(&e))),
    }
}

/// The first line of a clap error, without `error: `.
fn clap_message(e: &clap::Error) -> String {
    let text = e.to_string();
    let head: Vec<&str> = text
        .lines()
        .take_while(|l| !l.is_empty())
        .map(str::trim)
        .collect();
    let head = head.join(" ");
    head.strip_prefix("error: ").unwrap_or(&head).to_owned()
}

/// A key's value as its flag: `--long=VALUE`, one per element of an array for a
/// repeatable flag, `--long` for `true` of a switch.
fn flag(arg: &Arg, key: &str, value: &Value) -> Result<Vec<OsString>, String> {
    let long = arg.get_long().unwrap_or(key);
    match (arg.get_action(), value) {
        (ArgAction::SetTrue, Value::Boolean(true)) => Ok(vec![format!("--{long}").into()]),
        (ArgAction::SetTrue, Value::Boolean(false)) => Ok(Vec::new()),
        (ArgAction::SetTrue, _) => Err(format!("`{key}`: expected true or false")),
        (ArgAction::Append, Value::Array(items)) => items
            .iter()
            .map(|v| Ok(format!("--{long}={}", scalar(key, v)?).into()))
            .collect(),
        _ => Ok(vec![format!("--{long}={}", scalar(key, value)?).into()]),
    }
}

fn scalar(key: &str, value: &Value) -> Result<String, String> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Integer(n) => Ok(n.to_string()),
        Value::Float(x) => Ok(x.to_string()),
        Value::Boolean(b) => Ok(b.to_string()),
        Value::Datetime(d) => Ok(d.to_string()),
        Value::Array(_) | Value::Table(_) => Err(format!(
            "`{key}`: expected a string or a number, not {}",
            value.type_str()
        )),
    }
}

/// `servers`: each entry checked alone, as `--backend=URL[=WEIGHT]`.
fn servers(value: &Value) -> Result<Vec<OsString>, String> {
    let Value::Array(items) = value else {
        return Err(
            "`servers`: expected an array, e.g. servers = [\"http://10.0.0.1:80\", \
                    { url = \"http://10.0.0.2:80\", weight = 2 }]"
                .into(),
        );
    };
    let command = lenient();
    let mut flags = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let key = format!("servers[{i}]");
        let backend = match item {
            Value::String(s) => s.clone(),
            Value::Table(_) => {
                let entry: ServerEntry = item
                    .clone()
                    .try_into()
                    .map_err(|e| format!("`{key}`: {}", e.to_string().trim()))?;
                match entry.weight {
                    Some(w) => format!("{}={w}", entry.url),
                    None => entry.url,
                }
            }
            _ => {
                return Err(format!(
                    "`{key}`: expected a URL or a table {{ url = .., weight = .. }}, not {}",
                    item.type_str()
                ))
            }
        };
        let flag = OsString::from(format!("--backend={backend}"));
        check(&command, &key, core::slice::from_ref(&flag))?;
        flags.push(flag);
    }
    Ok(flags)
}

/// `sticky = "NAME"` or `[sticky]` with `name`, `codec`, `key`, `salt`, `ttl`: the
/// flags by id.
fn sticky_flags(command: &Command, value: &Value) -> Result<Vec<(String, Vec<OsString>)>, String> {
    let arg = |id: &str| {
        command
            .get_arguments()
            .find(|a| a.get_id() == id)
            .ok_or_else(|| format!("no flag {id}"))
    };
    let table: StickyTable = match value {
        Value::String(_) => {
            return Ok(vec![(
                "sticky".into(),
                flag(arg("sticky")?, "sticky", value)?,
            )])
        }
        Value::Table(_) => value
            .clone()
            .try_into()
            .map_err(|e| format!("`sticky`: {}", e.to_string().trim()))?,
        _ => return Err("`sticky`: expected a cookie name or a table".into()),
    };
    let mut out = vec![(
        "sticky".to_owned(),
        flag(arg("sticky")?, "sticky.name", &table.name)?,
    )];
    for (field, id, v) in [
        ("codec", "sticky_codec", table.codec),
        ("key", "sticky_key", table.key),
        ("salt", "sticky_salt", table.salt),
        ("ttl", "sticky_ttl", table.ttl),
    ] {
        if let Some(v) = v {
            out.push((
                id.to_owned(),
                flag(arg(id)?, &format!("sticky.{field}"), &v)?,
            ));
        }
    }
    Ok(out)
}

/// The command line parsed again with the file's flags in front.
fn merge(argv: &[OsString], flags: &Flags) -> Result<Args, String> {
    let mut all = vec![argv
        .first()
        .cloned()
        .unwrap_or_else(|| "roundrobin-proxy".into())];
    all.extend(flags.values().flatten().cloned());
    all.extend(argv.iter().skip(1).cloned());
    let matches = Args::command()
        .try_get_matches_from(all)
        .map_err(|e| clap_message(&e))?;
    Args::from_arg_matches(&matches).map_err(|e| clap_message(&e))
}

/// A server listed twice in the file is an error (on the command line the last wins).
fn no_duplicates(args: &Args, given: &BTreeSet<String>) -> Result<(), String> {
    if given.contains("backends") {
        return Ok(());
    }
    for (i, (url, _)) in args.backends.iter().enumerate() {
        if args.backends[..i].iter().any(|(u, _)| u == url) {
            return Err(format!("`servers`: {url} is listed twice"));
        }
    }
    Ok(())
}

/// Re-reads the file and applies its servers to the running pool; see the module's
/// documentation.
pub(crate) struct Reloader {
    source: Source,
    pool: Arc<Rebalancer<ServerUrl>>,
    default_weight: u32,
    /// The servers of the file last applied, with their configured weights (empty
    /// when `--backend` was given: the command line's servers are not reloaded).
    /// Held during a reload, so that reloads run one at a time.
    applied: Mutex<Vec<(ServerUrl, u32)>>,
}

/// One server and its configured weight.
#[derive(Debug, Serialize, PartialEq)]
pub(crate) struct Weighted {
    url: String,
    weight: u32,
}

/// A server whose configured weight changed.
#[derive(Debug, Serialize, PartialEq)]
pub(crate) struct Reweighted {
    url: String,
    from: u32,
    to: u32,
}

/// What a reload did: the answer of `POST /reload`.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Report {
    config: String,
    added: Vec<Weighted>,
    removed: Vec<String>,
    reweighted: Vec<Reweighted>,
    /// The file's servers already in the pool with the same weight.
    unchanged: usize,
    /// Keys whose value changed but which only apply at start.
    needs_restart: Vec<String>,
    /// Keys of the file that a flag on the command line overrides (not applied).
    overridden: Vec<String>,
    /// Changes the pool refused.
    errors: Vec<String>,
}

impl Reloader {
    /// Logs the overridden keys; `args` are the settings the process runs with.
    pub(crate) fn new(source: Source, pool: Arc<Rebalancer<ServerUrl>>, args: &Args) -> Self {
        let path = source.path.display();
        for key in &source.overridden {
            tracing::info!("config {path}: `{key}` is overridden by its flag");
        }
        let applied = if source.given.contains("backends") {
            Vec::new()
        } else {
            args.backends
                .iter()
                .map(|(url, w)| (url.clone(), w.unwrap_or(args.default_weight)))
                .collect()
        };
        tracing::info!("config {path}: {} servers", args.backends.len());
        Self {
            source,
            pool,
            default_weight: args.default_weight,
            applied: Mutex::new(applied),
        }
    }

    /// Reloads and logs; for `POST /reload`: the report as JSON, or why the file was
    /// rejected.
    pub(crate) fn answer(&self) -> Result<String, String> {
        match self.reload() {
            Ok(report) => serde_json::to_string(&report).map_err(|e| e.to_string()),
            Err(e) => {
                tracing::warn!("config: reload rejected, the running configuration is kept: {e}");
                Err(e)
            }
        }
    }

    /// Re-reads the file: an invalid one changes nothing; else the servers' diff is
    /// applied, and each change logged.
    pub(crate) fn reload(&self) -> Result<Report, String> {
        let mut applied = self.applied.lock().unwrap_or_else(PoisonError::into_inner);
        let source = &self.source;
        let path = source.path.display().to_string();
        let read = read(&source.path, &source.given)?;
        let args = merge(&source.argv, &read.flags).map_err(|e| format!("--config {path}: {e}"))?;
        validate(&args, &source.given).map_err(|e| format!("--config {path}: {e}"))?;
        let mut report = Report {
            config: path.clone(),
            overridden: read.overridden,
            ..Report::default()
        };
        let ids: BTreeSet<&String> = source.running.keys().chain(read.flags.keys()).collect();
        for id in ids {
            if id != "backends" && source.running.get(id) != read.flags.get(id) {
                tracing::warn!(
                    "config {path}: `{}` changed: it needs a restart",
                    key_of(id)
                );
                report.needs_restart.push(key_of(id));
            }
        }
        if !source.given.contains("backends") {
            let wanted: Vec<(ServerUrl, u32)> = args
                .backends
                .iter()
                .map(|(url, w)| (url.clone(), w.unwrap_or(self.default_weight)))
                .collect();
            self.apply(&applied, &wanted, &mut report);
            *applied = wanted;
        }
        tracing::info!(
            "config {path} reloaded: {} added, {} removed, {} reweighted, {} unchanged, {} \
             needing a restart",
            report.added.len(),
            report.removed.len(),
            report.reweighted.len(),
            report.unchanged,
            report.needs_restart.len()
        );
        Ok(report)
    }

    /// Upserts the `wanted` servers that are missing or weigh otherwise, then removes
    /// those of `before` that are no longer wanted.
    fn apply(&self, before: &[(ServerUrl, u32)], wanted: &[(ServerUrl, u32)], report: &mut Report) {
        let pool: BTreeMap<ServerUrl, u32> = self
            .pool
            .snapshot()
            .into_iter()
            .map(|s| (s.server, s.original_weight))
            .collect();
        for (url, weight) in wanted {
            let from = pool.get(url).copied();
            if from == Some(*weight) {
                report.unchanged += 1;
                continue;
            }
            if let Err(e) = self.pool.upsert_server(url.clone(), Some(*weight)) {
                tracing::warn!("config: cannot upsert {url}: {e}");
                report.errors.push(format!("{url}: {e}"));
                continue;
            }
            let url = url.to_string();
            match from {
                None => {
                    tracing::info!(server = %url, weight, "config: server added");
                    report.added.push(Weighted {
                        url,
                        weight: *weight,
                    });
                }
                Some(from) => {
                    tracing::info!(server = %url, before = from, after = weight, "config: server reweighted");
                    report.reweighted.push(Reweighted {
                        url,
                        from,
                        to: *weight,
                    });
                }
            }
        }
        for (url, _) in before {
            if wanted.iter().any(|(u, _)| u == url) || !pool.contains_key(url) {
                continue;
            }
            match self.pool.remove_server(url) {
                Ok(()) => {
                    tracing::info!(server = %url, "config: server removed");
                    report.removed.push(url.to_string());
                }
                Err(e) => {
                    tracing::warn!("config: cannot remove {url}: {e}");
                    report.errors.push(format!("{url}: {e}"));
                }
            }
        }
    }
}

/// What would stop the process from starting with `args`.
fn validate(args: &Args, given: &BTreeSet<String>) -> Result<(), String> {
    sticky(args)?;
    let token = admin_token(args)?;
    check_admin(args, token.is_some())?;
    no_duplicates(args, given)
}

/// Reloads what can be reloaded: the `--config` file's servers and the TLS certificate
/// and key. The answer is the config report (JSON), `{"tls":"reloaded"}` when only the
/// certificate was reloaded, or an error naming what was kept; a bad file or a bad
/// certificate changes nothing of its own part.
pub(crate) fn reload_all(
    reloader: Option<&Reloader>,
    tls: Option<&TlsAcceptor>,
) -> Result<String, String> {
    let config = reloader.map(Reloader::answer);
    let certificate = tls.map(|tls| match tls.reload() {
        Ok(()) => {
            tracing::info!("TLS certificate and key reloaded");
            Ok(())
        }
        Err(e) => {
            tracing::warn!("TLS certificate not reloaded, the running one is kept: {e}");
            Err(format!(
                "TLS certificate not reloaded, the running one is kept: {e}"
            ))
        }
    });
    match (config, certificate) {
        (Some(Err(e)), _) | (_, Some(Err(e))) => Err(e),
        (Some(Ok(report)), _) => Ok(report),
        (None, Some(Ok(()))) => Ok(r#"{"tls":"reloaded"}"#.to_owned()),
        (None, None) => Err("there is no --config file or TLS certificate to reload".to_owned()),
    }
}

/// On SIGHUP, [`reload_all`].
pub(crate) fn reload_on_sighup(reloader: Option<Arc<Reloader>>, tls: Option<TlsAcceptor>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(hup) => hup,
            Err(e) => {
                tracing::warn!("cannot listen for SIGHUP: {e}");
                return;
            }
        };
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                if reloader.is_none() && tls.is_none() {
                    tracing::info!(
                        "SIGHUP ignored: there is no --config file or TLS certificate to reload"
                    );
                    continue;
                }
                if let Some(reloader) = &reloader {
                    tracing::info!("SIGHUP: reloading {}", reloader.source.path.display());
                }
                let _ = reload_all(reloader.as_deref(), tls.as_ref());
            }
        });
    }
    #[cfg(not(unix))]
    drop((reloader, tls));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(text: &str, given: &[&str]) -> Result<Flags, String> {
        let given = given.iter().map(|s| (*s).to_owned()).collect();
        parse_file(text, &given).map(|r| r.flags)
    }

    fn args(text: &str, cli: &[&str]) -> Result<Args, String> {
        let argv: Vec<OsString> = core::iter::once("roundrobin-proxy")
            .chain(cli.iter().copied())
            .map(OsString::from)
            .collect();
        let matches = lenient().try_get_matches_from(&argv).unwrap();
        let given = matches
            .ids()
            .map(clap::Id::as_str)
            .filter(|id| matches.value_source(id) == Some(ValueSource::CommandLine))
            .map(str::to_owned)
            .collect();
        let read = parse_file(text, &given)?;
        merge(&argv, &read.flags)
    }

    #[test]
    fn the_example_file_is_valid() {
        let example = include_str!("../roundrobin.toml");
        let args = args(example, &[]).unwrap();
        validate(&args, &BTreeSet::new()).unwrap();
        assert_eq!(args.backends.len(), 3);
        assert_eq!(
            args.resilience.connect_timeout,
            core::time::Duration::from_secs(3)
        );
    }

    #[test]
    fn keys_are_flags_and_flags_win() {
        let text = r#"
            listen = "127.0.0.1:0"
            servers = ["http://127.0.0.1:9001", { url = "http://127.0.0.1:9002", weight = 3 }]
            timeout = "5s"
            retries = 4
            retry_on = "connect,502"
            rebalance = true
            max_ejected = 20
            [sticky]
            name = "_b"
            codec = "hash"
            salt = "pepper"
        "#;
        let a = args(text, &["--timeout", "2s"]).unwrap();
        assert_eq!(a.timeout, core::time::Duration::from_secs(2));
        assert_eq!(a.resilience.retries, 4);
        assert!(a.rebalance);
        assert_eq!(a.resilience.max_ejected, 20);
        assert_eq!(a.backends[1].1, Some(3));
        assert_eq!(a.sticky.as_deref(), Some("_b"));
        assert_eq!(a.sticky_salt.as_deref(), Some("pepper"));
        let a = args(text, &["--backend", "http://127.0.0.1:7000"]).unwrap();
        assert_eq!(a.backends.len(), 1);
    }

    #[test]
    fn bad_files_are_rejected_with_the_key() {
        let e = flags("listn = \"127.0.0.1:0\"\nretrys = 2\n", &[]).unwrap_err();
        assert!(e.contains("unknown keys `listn`, `retrys`"), "{e}");
        let e = flags("connect_timeout = \"3 parsecs\"", &[]).unwrap_err();
        assert!(e.starts_with("`connect_timeout`: "), "{e}");
        let e = flags("connect_timeout = 3", &[]).unwrap_err();
        assert!(e.contains("no unit"), "{e}");
        let e = flags("servers = [\"ftp://x\"]", &[]).unwrap_err();
        assert!(e.starts_with("`servers[0]`: "), "{e}");
        let e = flags("servers = [{ url = \"http://x\", wieght = 2 }]", &[]).unwrap_err();
        assert!(e.contains("wieght"), "{e}");
        let e = flags("[sticky]\nname = \"a\"\ncodek = \"raw\"", &[]).unwrap_err();
        assert!(e.contains("codek"), "{e}");
        let e = flags("max_connections = 0", &[]).unwrap_err();
        assert!(e.starts_with("`max_connections`: "), "{e}");
        let e = flags("rebalance = \"yes\"", &[]).unwrap_err();
        assert!(e.contains("true or false"), "{e}");
        let e = flags("config = \"other.toml\"", &[]).unwrap_err();
        assert!(e.contains("unknown key `config`"), "{e}");
        let e = flags("servers = [", &[]).unwrap_err();
        assert!(e.contains("line 1"), "{e}");
        let e = args("servers = [\"http://a:1\", \"http://a:1\"]", &[])
            .and_then(|a| validate(&a, &BTreeSet::new()))
            .unwrap_err();
        assert!(e.contains("listed twice"), "{e}");
    }

    #[test]
    fn admin_may_come_from_the_file_and_the_token_file_from_a_flag() {
        let a = args(
            "admin = \"127.0.0.1:0\"",
            &["--admin-token-file", "/nonexistent"],
        )
        .unwrap();
        assert!(a.admin.is_some());
    }
}
