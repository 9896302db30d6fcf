//! The daemon's log: timestamps in local time with the offset, a level
//! that can change while the daemon runs (`loglevel`, `clinit setpar`), a
//! file that can be reopened (`clinit reopen`, SIGHUP: for logrotate),
//! and the last words: the most recent `lwords_keep` records of every
//! level, below the log level too, kept in memory and written out when
//! something goes wrong (a fatal error, a panic, an entry giving up, a
//! store failure) or when asked (`clinit lastwords`).
//!
//! One process has one log, so its state is process-wide: the level, the
//! ring and the open file are statics behind locks, set up once by
//! [`init`]. Records caused by a request carry the request's tag (a
//! `req` span: the peer and the request's connection and number).

use crate::cltab::LogLevel;
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, PoisonError};
use tracing::field::{Field, Visit};
use tracing_subscriber::Layer;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

/// How many records the last words keep by default (`lwords_keep`).
pub const DEFAULT_LWORDS: usize = 1000;

static LEVEL: AtomicU8 = AtomicU8::new(2);
static LWORDS: Mutex<LastWords> = Mutex::new(LastWords {
    ring: VecDeque::new(),
    keep: DEFAULT_LWORDS,
});
static FILE: Mutex<Option<(PathBuf, File)>> = Mutex::new(None);

/// The ring of recent records.
struct LastWords {
    ring: VecDeque<String>,
    keep: usize,
}

fn lwords() -> std::sync::MutexGuard<'static, LastWords> {
    LWORDS.lock().unwrap_or_else(PoisonError::into_inner)
}

fn file() -> std::sync::MutexGuard<'static, Option<(PathBuf, File)>> {
    FILE.lock().unwrap_or_else(PoisonError::into_inner)
}

fn rank(l: &tracing::Level) -> u8 {
    match *l {
        tracing::Level::ERROR => 0,
        tracing::Level::WARN => 1,
        tracing::Level::INFO => 2,
        tracing::Level::DEBUG => 3,
        tracing::Level::TRACE => 4,
    }
}

/// Set the log level (records above it go to the last words only).
pub fn set_level(level: LogLevel) {
    LEVEL.store(
        LogLevel::ALL.iter().position(|l| *l == level).unwrap_or(2) as u8,
        Ordering::Relaxed,
    );
}

/// The log level in force.
pub fn level() -> LogLevel {
    LogLevel::ALL[usize::from(LEVEL.load(Ordering::Relaxed)).min(4)]
}

/// Keep the last `n` records (at least 1).
pub fn set_lwords_keep(n: usize) {
    let mut l = lwords();
    l.keep = n.max(1);
    while l.ring.len() > l.keep {
        l.ring.pop_front();
    }
}

/// The last words kept, oldest first.
pub fn last_words() -> Vec<String> {
    lwords().ring.iter().cloned().collect()
}

/// The local time with its offset, as the log and `status --long` show it.
pub fn local_time(unix: f64) -> String {
    use chrono::TimeZone;
    let secs = unix.floor() as i64;
    let nanos = ((unix - unix.floor()) * 1e9) as u32;
    match chrono::Local.timestamp_opt(secs, nanos) {
        chrono::LocalResult::Single(t) | chrono::LocalResult::Ambiguous(t, _) => {
            t.format("%Y-%m-%dT%H:%M:%S%.3f%:z").to_string()
        }
        chrono::LocalResult::None => format!("@{unix}"),
    }
}

fn now_text() -> String {
    chrono::Local::now()
        .format("%Y-%m-%dT%H:%M:%S%.6f%:z")
        .to_string()
}

/// Children's output (whole lines, see `supervisor::relay`): to the log
/// file, or standard error when there is none; never to both.
pub fn write_children(bytes: &[u8]) {
    if let Some((_, f)) = file().as_mut() {
        let _ = f.write_all(bytes);
        return;
    }
    let _ = std::io::stderr().write_all(bytes);
}

/// Write `bytes` to the log file and to standard error; failures are
/// not reported (a report would have nowhere to go).
fn write_out(bytes: &[u8]) {
    if let Some((_, f)) = file().as_mut() {
        let _ = f.write_all(bytes);
    }
    let _ = std::io::stderr().write_all(bytes);
}

/// Write the last words to the log, headed by why.
pub fn dump_last_words(why: &str) {
    let words = last_words();
    let mut out = format!(
        "{} LAST WORDS ({why}): the last {} log records of every level follow\n",
        now_text(),
        words.len()
    );
    for w in &words {
        out.push_str("    ");
        out.push_str(w);
        out.push('\n');
    }
    let _ = writeln!(out, "{} END OF LAST WORDS", now_text());
    write_out(out.as_bytes());
}

/// Reopen the log file at its path (after logrotate moved it away).
/// Returns a second descriptor of the new file, for the children's output.
pub fn reopen() -> std::io::Result<Option<File>> {
    let mut f = file();
    let Some((path, _)) = f.as_ref() else {
        return Ok(None);
    };
    let path = path.clone();
    let new = crate::config::files::append(&path)?;
    let second = new.try_clone()?;
    *f = Some((path, new));
    Ok(Some(second))
}

/// The log file's path, once [`init`] opened one.
pub fn path() -> Option<PathBuf> {
    file().as_ref().map(|(p, _)| p.clone())
}

/// The local time with offset, for the log's records.
struct LocalTime;

impl FormatTime for LocalTime {
    fn format_time(&self, w: &mut Writer<'_>) -> std::fmt::Result {
        w.write_str(&now_text())
    }
}

/// Writes each formatted record to the current log file and standard
/// error.
struct Out;

impl std::io::Write for Out {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        write_out(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every record, of every level, into the last words.
struct Ring;

struct Fields<'a>(&'a mut String);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, " {value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            let _ = write!(self.0, " {value}");
        } else {
            let _ = write!(self.0, " {}={value}", field.name());
        }
    }
}

/// A span's fields as text, kept in its extensions for [`Ring`].
struct SpanText(String);

impl<S> Layer<S> for Ring
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: Context<'_, S>,
    ) {
        let mut text = String::new();
        attrs.record(&mut Fields(&mut text));
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(SpanText(format!(
                "{}{{{}}}",
                attrs.metadata().name(),
                text.trim()
            )));
        }
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
        let mut line = format!("{} {:>5}", now_text(), event.metadata().level());
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(t) = span.extensions().get::<SpanText>() {
                    let _ = write!(line, " {}:", t.0);
                }
            }
        }
        event.record(&mut Fields(&mut line));
        let mut l = lwords();
        if l.ring.len() >= l.keep {
            l.ring.pop_front();
        }
        l.ring.push_back(line);
    }
}

/// Set up the daemon's log: `log` at `path` (None: standard error only),
/// at `level`, keeping `lwords_keep` last words. A panic anywhere then
/// writes its location and the last words to the log before the process
/// goes on to exit.
pub fn init(path: Option<(&Path, File)>, level: LogLevel, lwords_keep: usize) {
    set_level(level);
    set_lwords_keep(lwords_keep);
    if let Some((p, f)) = path {
        *file() = Some((p.to_path_buf(), f));
    }
    let shown =
        tracing_subscriber::filter::filter_fn(|m| rank(m.level()) <= LEVEL.load(Ordering::Relaxed));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(|| Out)
        .with_ansi(false)
        .with_target(false)
        .with_timer(LocalTime)
        .log_internal_errors(false)
        .with_filter(shown);
    let _ = tracing_subscriber::registry()
        .with(fmt)
        .with(Ring)
        .try_init();
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let at = info
            .location()
            .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
            .unwrap_or_else(|| "an unknown place".into());
        let what = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let thread = std::thread::current();
        let name = thread.name().unwrap_or("unnamed");
        write_out(
            format!(
                "{} ERROR PANIC in thread {name} at {at}: {what}\n",
                now_text()
            )
            .as_bytes(),
        );
        dump_last_words(&format!("panic at {at}"));
        previous(info);
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_time_has_an_offset() {
        let t = local_time(0.5);
        // 1970-01-01T..:..:..(.500)(+|-)HH:MM
        assert!(t.contains(".500"), "{t}");
        let tail = &t[t.len() - 6..];
        assert!(tail.starts_with('+') || tail.starts_with('-'), "{t}");
        assert_eq!(&tail[3..4], ":", "{t}");
    }
}
