//! `jobkey audit verify` over several files: a rotated set, in which the
//! chain goes on from file to file, and several replicas' logs, a chain
//! each.
//!
//! Each file is checked on its own (`chain::verify_segment`, from its
//! first line). The files are then grouped into chains by the `replica`
//! their first line names (a group whose first file continues another
//! group's last file joins that chain: a replica id changed), and each
//! chain is put in order by first seq and checked at every join: it starts
//! at seq 1 (unless older files were archived), each file's first seq is
//! one more than the previous file's last, its first `prev` is that
//! record's hash, and a rotated file's name does not say it is older than
//! the file before it. The first break is the chain's error, naming the
//! file and the seq or line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::chain::{self, FoundHead, Segment, Start};
use super::rotate::rotated_rank;
use super::{AuditError, Checkpoint, TornLine, VerifyOptions, VerifyReport};

/// What `audit verify` is given besides the files.
#[derive(Debug, Clone, Default)]
pub(crate) struct SetOptions {
    /// Trusted keys, the external checkpoint, `--min-seq`. The last two
    /// apply when the files hold one chain (after `replica`'s filter).
    pub known: VerifyOptions,
    /// Older files were archived: a chain may start after seq 1.
    pub archived: bool,
    /// Only this replica's files.
    pub replica: Option<String>,
}

/// One file of a chain that verified on its own.
#[derive(Debug, Clone)]
pub(crate) struct FileReport {
    pub path: PathBuf,
    pub report: VerifyReport,
}

/// One chain: the files that verified, in order, and its first break.
#[derive(Debug)]
pub(crate) struct ChainReport {
    /// The replica ids its files name, in order (empty: none named).
    pub replicas: Vec<String>,
    pub files: Vec<FileReport>,
    pub outcome: Result<(), AuditError>,
}

impl ChainReport {
    /// `replica a`, `replica a, then b`, or `no replica id`.
    pub(crate) fn name(&self) -> String {
        match self.replicas.as_slice() {
            [] => "no replica id".into(),
            names => format!("replica {}", names.join(", then ")),
        }
    }

    pub(crate) fn first_seq(&self) -> u64 {
        self.files.first().map_or(1, |f| f.report.first_seq)
    }

    pub(crate) fn last_seq(&self) -> u64 {
        self.files.last().map_or(0, |f| f.report.last_seq())
    }

    pub(crate) fn last_hash(&self) -> &str {
        self.files
            .last()
            .map_or(chain::GENESIS, |f| &f.report.last_hash)
    }

    pub(crate) fn records(&self) -> u64 {
        self.files.iter().map(|f| f.report.lines).sum()
    }

    pub(crate) fn checkpoints(&self) -> u64 {
        self.files.iter().map(|f| f.report.checkpoints).sum()
    }

    pub(crate) fn last_checkpoint(&self) -> Option<&Checkpoint> {
        self.files
            .iter()
            .rev()
            .find_map(|f| f.report.last_checkpoint.as_ref())
    }

    /// Records after the last checkpoint, over the files.
    pub(crate) fn since_checkpoint(&self) -> u64 {
        self.files.iter().fold(0, |since, f| {
            if f.report.checkpoints > 0 {
                f.report.since_checkpoint
            } else {
                since + f.report.since_checkpoint
            }
        })
    }

    /// The last file's torn last line.
    pub(crate) fn torn(&self) -> Option<(&Path, &TornLine)> {
        let f = self.files.last()?;
        f.report.torn.as_ref().map(|t| (f.path.as_path(), t))
    }
}

/// Every chain found, and the files that hold no record.
#[derive(Debug)]
pub(crate) struct SetReport {
    pub chains: Vec<ChainReport>,
    /// Files without a record (a live file just after a rotation), with
    /// a torn line if they hold one.
    pub empty: Vec<(PathBuf, Option<TornLine>)>,
    /// Whether `--checkpoint` / `--min-seq` were checked (the files held
    /// one chain).
    pub known_checked: bool,
}

#[cfg(test)]
impl SetReport {
    pub(crate) fn is_intact(&self) -> bool {
        self.chains.iter().all(|c| c.outcome.is_ok())
    }
}

/// A served log and the files it was rotated into, as one chain
/// summarised (for the review page): the records of every file, the last
/// hash, the checkpoints, and a torn last line.
pub(crate) fn verify_log(path: &Path) -> Result<VerifyReport, AuditError> {
    let mut files = super::rotated_files(path);
    files.sort();
    files.push(path.to_owned());
    let set = verify_set(&files, &SetOptions::default())?;
    let torn = set.empty.iter().find_map(|(_, t)| t.clone());
    let mut chains = set.chains.into_iter();
    let mut c = match (chains.next(), chains.next()) {
        (Some(c), None) => c,
        (None, _) => {
            return Ok(VerifyReport {
                first_seq: 1,
                lines: 0,
                last_hash: chain::GENESIS.to_owned(),
                bytes: 0,
                torn,
                checkpoints: 0,
                last_checkpoint: None,
                since_checkpoint: 0,
            });
        }
        (Some(_), Some(_)) => {
            return Err(AuditError::Incomplete {
                path: path.display().to_string(),
                reason: "its files hold several chains (run `jobkey audit verify` on them)".into(),
            });
        }
    };
    std::mem::replace(&mut c.outcome, Ok(()))?;
    Ok(VerifyReport {
        first_seq: c.first_seq(),
        lines: c.records(),
        last_hash: c.last_hash().to_owned(),
        bytes: c.files.iter().map(|f| f.report.bytes).sum(),
        torn: c.torn().map(|(_, t)| t.clone()).or(torn),
        checkpoints: c.checkpoints(),
        last_checkpoint: c.last_checkpoint().cloned(),
        since_checkpoint: c.since_checkpoint(),
    })
}

/// One file, checked on its own.
struct Entry {
    path: PathBuf,
    /// For the order: its first seq (0 when unreadable).
    first_seq: u64,
    replica: Option<String>,
    checked: Result<Segment, AuditError>,
}

/// Verifies `files` as one or more chains (see the module docs).
pub(crate) fn verify_set(files: &[PathBuf], opts: &SetOptions) -> Result<SetReport, AuditError> {
    let trusted = chain::trusted_keys(&opts.known)?;
    let wanted = opts.known.checkpoint.as_ref().map(|c| c.seq);
    let mut seen = Vec::new();
    let mut entries = Vec::new();
    let mut empty = Vec::new();
    for f in files {
        let real = std::fs::canonicalize(f).unwrap_or_else(|_| f.clone());
        if seen.contains(&real) {
            continue;
        }
        seen.push(real);
        match chain::verify_segment(f, Start::FirstLine, &trusted, wanted) {
            Ok(seg) if seg.report.lines == 0 => empty.push((f.clone(), seg.report.torn)),
            Ok(seg) => entries.push(Entry {
                path: f.clone(),
                first_seq: seg.report.first_seq,
                replica: seg.replica.clone(),
                checked: Ok(seg),
            }),
            Err(AuditError::Io { path, reason }) => return Err(AuditError::Io { path, reason }),
            Err(e) => {
                let (first_seq, replica) = chain::peek_first(f).unwrap_or((0, None));
                entries.push(Entry {
                    path: f.clone(),
                    first_seq,
                    replica,
                    checked: Err(e),
                });
            }
        }
    }
    if let Some(r) = &opts.replica {
        entries.retain(|e| e.replica.as_ref() == Some(r));
        if entries.is_empty() {
            return Err(AuditError::Incomplete {
                path: files_text(files),
                reason: format!("no record of replica {r} in these files"),
            });
        }
    }
    let mut groups: BTreeMap<Option<String>, Vec<Entry>> = BTreeMap::new();
    for e in entries {
        groups.entry(e.replica.clone()).or_default().push(e);
    }
    let mut chains: Vec<Vec<Entry>> = groups
        .into_values()
        .map(|mut g| {
            g.sort_by_key(|e| e.first_seq);
            g
        })
        .collect();
    join_continued(&mut chains);
    let known_checked = chains.len() == 1;
    let chains = chains
        .into_iter()
        .map(|c| check_chain(c, opts, known_checked))
        .collect();
    Ok(SetReport {
        chains,
        empty,
        known_checked,
    })
}

fn files_text(files: &[PathBuf]) -> String {
    files
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A chain whose first file starts after seq 1 and continues another
/// chain's last file is that chain, under a new replica id: joined.
fn join_continued(chains: &mut Vec<Vec<Entry>>) {
    let end = |c: &[Entry]| match c.last().map(|e| &e.checked) {
        Some(Ok(s)) => Some((s.report.last_seq() + 1, s.report.last_hash.clone())),
        _ => None,
    };
    let start = |c: &[Entry]| match c.first().map(|e| &e.checked) {
        Some(Ok(s)) if s.report.first_seq > 1 => Some((s.report.first_seq, s.first_prev.clone())),
        _ => None,
    };
    loop {
        let join = (0..chains.len()).find_map(|i| {
            let s = start(chains[i].as_slice())?;
            (0..chains.len())
                .find(|&j| j != i && end(chains[j].as_slice()).as_ref() == Some(&s))
                .map(|j| (i, j))
        });
        let Some((later, earlier)) = join else {
            return;
        };
        let moved = chains.remove(later);
        let earlier = if earlier > later {
            earlier - 1
        } else {
            earlier
        };
        chains[earlier].extend(moved);
    }
}

/// The checks at every join of one chain, then what is known from outside.
fn check_chain(entries: Vec<Entry>, opts: &SetOptions, known: bool) -> ChainReport {
    let mut replicas: Vec<String> = Vec::new();
    for r in entries.iter().filter_map(|e| e.replica.clone()) {
        if replicas.last() != Some(&r) {
            replicas.push(r);
        }
    }
    let mut files: Vec<FileReport> = Vec::new();
    let mut found: Option<(String, u64, String)> = None;
    let mut outcome = Ok(());
    for e in entries {
        let seg = match e.checked {
            Ok(seg) => seg,
            Err(err) => {
                outcome = Err(err);
                break;
            }
        };
        if let Err(err) = check_join(files.last(), &e.path, &seg, opts.archived) {
            outcome = Err(err);
            break;
        }
        if found.is_none()
            && let (Some(head), Some(w)) = (&seg.head_at_wanted, opts.known.checkpoint.as_ref())
            && w.seq >= seg.report.first_seq
        {
            found = Some((
                e.path.display().to_string(),
                w.seq - seg.report.first_seq + 1,
                head.clone(),
            ));
        }
        files.push(FileReport {
            path: e.path,
            report: seg.report,
        });
    }
    let mut report = ChainReport {
        replicas,
        files,
        outcome,
    };
    if known && report.outcome.is_ok() {
        report.outcome = check_known(&report, opts, found);
    }
    report
}

/// `--checkpoint` and `--min-seq` against a whole chain.
fn check_known(
    c: &ChainReport,
    opts: &SetOptions,
    found: Option<(String, u64, String)>,
) -> Result<(), AuditError> {
    let last = c.files.last().map(|f| f.path.display().to_string());
    let last = last.unwrap_or_default();
    if let Some(cp) = &opts.known.checkpoint
        && found.is_none()
        && cp.seq < c.first_seq()
    {
        return Err(AuditError::Incomplete {
            path: c
                .files
                .first()
                .map(|f| f.path.display().to_string())
                .unwrap_or_default(),
            reason: format!(
                "the external checkpoint signs seq {}, before this file's first record (seq {}): give the files that hold it",
                cp.seq,
                c.first_seq()
            ),
        });
    }
    let found = found.as_ref().map(|(path, line, head)| FoundHead {
        path,
        line: *line,
        head,
    });
    chain::check_known(&last, c.last_seq(), found, &opts.known)
}

/// Whether `seg` (the file at `path`) may follow `before` in a chain, or
/// start it.
fn check_join(
    before: Option<&FileReport>,
    path: &Path,
    seg: &Segment,
    archived: bool,
) -> Result<(), AuditError> {
    let here = path.display().to_string();
    let first = seg.report.first_seq;
    let Some(before) = before else {
        if first != 1 && !archived {
            return Err(AuditError::Incomplete {
                path: here,
                reason: format!(
                    "the chain starts here at seq {first}, not at seq 1: the files before it are missing (if they were archived, pass --archived)"
                ),
            });
        }
        return Ok(());
    };
    let there = before.path.display().to_string();
    if let Some(t) = &before.report.torn {
        return Err(AuditError::Corrupt {
            path: there,
            line: t.line as usize,
            reason: format!(
                "the last line is torn ({}), yet {here} goes on with the chain",
                t.why
            ),
        });
    }
    let end = before.report.last_seq();
    if first > end + 1 {
        return Err(AuditError::Incomplete {
            path: here,
            reason: format!(
                "starts at seq {first} but {there} ends at seq {end}: records {} to {} are missing (a rotated file removed?)",
                end + 1,
                first - 1
            ),
        });
    }
    if first <= end {
        return Err(AuditError::Corrupt {
            path: here,
            line: 1,
            reason: format!(
                "starts at seq {first}, but {there} already holds seq {} to {end}: it does not follow it (a copy, or another chain with the same replica id)",
                before.report.first_seq.max(first)
            ),
        });
    }
    if seg.first_prev != before.report.last_hash {
        return Err(AuditError::Corrupt {
            path: here,
            line: 1,
            reason: format!(
                "seq {first} does not continue {there}: its `prev` is not the hash of seq {end} (a file of another chain spliced in, or {there} rewritten)"
            ),
        });
    }
    if named_before(path, &before.path) {
        return Err(AuditError::Corrupt {
            path: here,
            line: 1,
            reason: format!(
                "holds the records after {there}'s, but its name says it was rotated before it (renamed?)"
            ),
        });
    }
    Ok(())
}

/// Whether `a`'s name says it is older than `b` (both the same log's:
/// the live file, or rotated files `<log>.<stamp>[-N]`).
fn named_before(a: &Path, b: &Path) -> bool {
    match (NameRank::of(a), NameRank::of(b)) {
        (Some(a), Some(b)) if a.dir == b.dir && a.log == b.log => match (a.rotated, b.rotated) {
            (Some(ra), Some(rb)) => ra < rb,
            (Some(_), None) => true,
            _ => false,
        },
        _ => false,
    }
}

/// Where a file's name puts it among its log's files.
struct NameRank {
    dir: PathBuf,
    /// The live log's name.
    log: String,
    /// A rotated file's stamp and collision number (`None`: the live file).
    rotated: Option<(String, u64)>,
}

impl NameRank {
    fn of(p: &Path) -> Option<NameRank> {
        let dir = p.parent()?.to_path_buf();
        let name = p.file_name()?.to_string_lossy().into_owned();
        let rotated = name
            .rfind('.')
            .and_then(|at| Some((name[..at].to_owned(), rotated_rank(&name[..at], &name)?)));
        Some(match rotated {
            Some((log, rank)) => NameRank {
                dir,
                log,
                rotated: Some(rank),
            },
            None => NameRank {
                dir,
                log: name,
                rotated: None,
            },
        })
    }
}
