//! The messages `sluice policy test` runs and what is expected of them: `--eml` files and
//! folders, or a `--suite` folder whose every `NAME.eml` has a `NAME.expect` beside it.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use super::{PolicyTestArgs, UsageError};
use crate::conversation::script::Simulation;
use crate::policy::Outcome;

/// The envelope and expectations of one message.
#[derive(Debug, Clone, Default)]
pub(super) struct Case {
    pub file: PathBuf,
    pub client_ip: Option<IpAddr>,
    pub helo: Option<String>,
    pub from: Option<String>,
    pub to: Vec<String>,
    pub expect: Option<Expectation>,
}

/// What a message's transactions must come to.
#[derive(Debug, Clone, Default)]
pub(super) struct Expectation {
    pub outcome: Option<Outcome>,
    pub code: Option<u16>,
    pub stage: Option<String>,
    pub symbols: Vec<String>,
    pub no_symbols: Vec<String>,
}

fn split_list(value: &str) -> Vec<String> {
    value.split([',', ' ']).map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect()
}

fn read_expect(path: &Path, case: &mut Case) -> Result<(), UsageError> {
    let text = std::fs::read_to_string(path).map_err(|e| UsageError(format!("{}: {e}", path.display())))?;
    let mut expect = Expectation::default();
    for (n, line) in text.lines().enumerate() {
        let line = line.split_once('#').map_or(line, |(before, _)| before).trim();
        if line.is_empty() {
            continue;
        }
        let bad = |what: &str| UsageError(format!("{}:{}: {what}", path.display(), n + 1));
        let Some((key, value)) = line.split_once(':') else {
            expect.outcome =
                Some(Outcome::parse(line).ok_or_else(|| bad("expected `key: value` or an outcome"))?);
            continue;
        };
        let value = value.trim();
        match key.trim().to_ascii_lowercase().as_str() {
            "final" | "outcome" => {
                expect.outcome = Some(Outcome::parse(value).ok_or_else(|| bad("unknown outcome"))?)
            }
            "code" => expect.code = Some(value.parse().map_err(|_| bad("code must be a number"))?),
            "stage" => expect.stage = Some(value.to_ascii_lowercase()),
            "symbols" => expect.symbols.extend(split_list(value)),
            "no-symbols" => expect.no_symbols.extend(split_list(value)),
            "client-ip" => case.client_ip = Some(value.parse().map_err(|_| bad("invalid IP address"))?),
            "helo" => case.helo = Some(value.to_string()),
            "from" => case.from = Some(value.to_string()),
            "to" => case.to.extend(split_list(value)),
            other => return Err(bad(&format!("unknown key {other:?}"))),
        }
    }
    if expect.outcome.is_none() {
        return Err(UsageError(format!("{}: no expected outcome (`final: …`)", path.display())));
    }
    case.expect = Some(expect);
    Ok(())
}

fn eml_files_in(dir: &Path) -> Result<Vec<PathBuf>, UsageError> {
    let entries = std::fs::read_dir(dir).map_err(|e| UsageError(format!("{}: {e}", dir.display())))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x.eq_ignore_ascii_case("eml")))
        .collect();
    files.sort();
    Ok(files)
}

/// The cases the arguments name.
pub(super) fn collect(args: &PolicyTestArgs) -> Result<Vec<Case>, UsageError> {
    if let Some(dir) = &args.suite {
        let files = eml_files_in(dir)?;
        if files.is_empty() {
            return Err(UsageError(format!("{}: no *.eml files", dir.display())));
        }
        return files
            .into_iter()
            .map(|file| {
                let mut case = Case { file: file.clone(), ..Case::default() };
                let expect = file.with_extension("expect");
                if !expect.is_file() {
                    return Err(UsageError(format!("{}: missing expectation file", expect.display())));
                }
                read_expect(&expect, &mut case)?;
                Ok(case)
            })
            .collect();
    }
    if args.eml.is_empty() {
        return Err(UsageError("give --eml FILE|DIR (repeatable) or --suite DIR".into()));
    }
    let mut cases = Vec::new();
    for path in &args.eml {
        if path.is_dir() {
            cases.extend(eml_files_in(path)?.into_iter().map(|file| Case { file, ..Case::default() }));
        } else if path.is_file() {
            cases.push(Case { file: path.clone(), ..Case::default() });
        } else {
            return Err(UsageError(format!("{}: no such file or directory", path.display())));
        }
    }
    Ok(cases)
}

/// What in `simulation` differs from `expect`.
pub(super) fn problems(simulation: &Simulation, expect: &Expectation) -> Vec<String> {
    let j = &simulation.judgement;
    let mut problems = Vec::new();
    if let Some(outcome) = expect.outcome.filter(|o| *o != j.outcome) {
        problems.push(format!(
            "expected {}, got {} ({})",
            outcome.as_str(),
            j.outcome.as_str(),
            simulation.reply
        ));
    }
    if let Some(code) = expect.code.filter(|c| *c != simulation.reply.code) {
        problems.push(format!("expected code {code}, got {}", simulation.reply.code));
    }
    if let Some(stage) = expect.stage.as_deref().filter(|s| *s != j.stage.as_str()) {
        problems.push(format!("expected stage {stage}, got {}", j.stage));
    }
    let names: Vec<&str> = j.symbols.iter().map(|s| s.symbol.name.as_str()).collect();
    for wanted in &expect.symbols {
        if !names.contains(&wanted.as_str()) {
            problems.push(format!("missing symbol {wanted}"));
        }
    }
    for unwanted in &expect.no_symbols {
        if names.contains(&unwanted.as_str()) {
            problems.push(format!("unexpected symbol {unwanted}"));
        }
    }
    problems
}
