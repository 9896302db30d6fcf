//! Children's output into the shared log, each line prefixed with the
//! entry's `group:tag` (setting `log_prefix`, on by default).
//!
//! A child's standard output and error are the write end of one pipe (so
//! its lines keep their order); the daemon reads the other end in a task of
//! its runtime and writes whole lines, prefixed, to the log file, under the
//! log's lock, so that lines of different children and the daemon's own
//! records never interleave within a line. A line longer than
//! [`LINE_MAX`] is cut into pieces of that size, each prefixed; a last line
//! without a newline is written with one when the pipe closes (every
//! process holding it has exited).
//!
//! The pipe's read end is the daemon's, so a log file that logrotate moved
//! and `clinit reopen` replaced is the one children's lines go to from then
//! on, running children's too. The cost: a child writing while the daemon
//! is stopped (SIGSTOP) blocks once the pipe's buffer (64 KiB) is full,
//! where it would have written to the file; `log_prefix:off` restores
//! direct writes.

use std::fs::File;

/// The longest piece of a line written at once.
pub const LINE_MAX: usize = 8192;

/// A pipe whose write end the caller gives to a child as its output and
/// whose lines go to the log prefixed by `prefix` (`"web:app: "`). `None`
/// outside a tokio runtime or when no pipe can be made (too many open
/// files): the caller then gives the child the log file itself.
pub fn pipe(prefix: String) -> Option<File> {
    let handle = tokio::runtime::Handle::try_current().ok()?;
    let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| {
            tracing::warn!("{prefix}no pipe for its output ({e}); it writes to the log directly")
        })
        .ok()?;
    // Registered with the runtime's reactor: must be made inside it.
    let _in = handle.enter();
    let rx = match tokio::net::unix::pipe::Receiver::from_owned_fd(rd) {
        Ok(rx) => rx,
        Err(e) => {
            tracing::warn!("{prefix}cannot read its output ({e}); it writes to the log directly");
            return None;
        }
    };
    handle.spawn(relay(rx, prefix.into_bytes()));
    Some(File::from(wr))
}

async fn relay(rx: tokio::net::unix::pipe::Receiver, prefix: Vec<u8>) {
    let mut lines = Lines::new(prefix);
    loop {
        if rx.readable().await.is_err() {
            break;
        }
        // The buffer lives between the wake-up and the read only, so it is
        // not part of the task: 1,000 idle entries hold no 8 KiB each.
        let mut chunk = [0u8; 4096];
        let n = match rx.try_read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(_) => break,
        };
        let out = lines.push(&chunk[..n]);
        if !out.is_empty() {
            crate::logging::write_children(&out);
        }
    }
    let out = lines.finish();
    if !out.is_empty() {
        crate::logging::write_children(&out);
    }
}

/// Bytes in, whole prefixed lines out (pure, for the tests).
pub struct Lines {
    prefix: Vec<u8>,
    partial: Vec<u8>,
}

impl Lines {
    pub fn new(prefix: Vec<u8>) -> Lines {
        Lines {
            prefix,
            partial: Vec::new(),
        }
    }

    fn line(&self, out: &mut Vec<u8>, bytes: &[u8]) {
        out.extend_from_slice(&self.prefix);
        out.extend_from_slice(bytes);
        if bytes.last() != Some(&b'\n') {
            out.push(b'\n');
        }
    }

    /// The whole lines that `bytes` completes, each prefixed; a line that
    /// reaches [`LINE_MAX`] bytes without a newline is written as a piece.
    pub fn push(&mut self, mut bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let room = LINE_MAX - self.partial.len();
            let take = match bytes.iter().take(room).position(|&b| b == b'\n') {
                Some(i) => i + 1,
                None => room.min(bytes.len()),
            };
            let (now, rest) = bytes.split_at(take);
            bytes = rest;
            let complete = now.last() == Some(&b'\n') || self.partial.len() + now.len() == LINE_MAX;
            if complete {
                if self.partial.is_empty() {
                    self.line(&mut out, now);
                } else {
                    let mut whole = std::mem::take(&mut self.partial);
                    whole.extend_from_slice(now);
                    self.line(&mut out, &whole);
                }
            } else {
                self.partial.extend_from_slice(now);
            }
        }
        out
    }

    /// What is left when the pipe closes: a last line without its newline.
    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        if !self.partial.is_empty() {
            let last = std::mem::take(&mut self.partial);
            self.line(&mut out, &last);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_lines_are_prefixed_and_pieces_wait_for_their_end() {
        let long = vec![b'x'; LINE_MAX + 10];
        let mut long_out = b"g:t: ".to_vec();
        long_out.extend_from_slice(&long[..LINE_MAX]);
        long_out.extend_from_slice(b"\n");
        // (input chunks, output after each chunk, output at the end)
        type Row<'a> = (&'a [&'a [u8]], &'a [&'a [u8]], &'a [u8]);
        let rows: &[Row] = &[
            (&[b"hello\n"], &[b"g:t: hello\n"], b""),
            (&[b"a\nb\n"], &[b"g:t: a\ng:t: b\n"], b""),
            (&[b"par", b"tial\n"], &[b"", b"g:t: partial\n"], b""),
            (&[b"no newline"], &[b""], b"g:t: no newline\n"),
            (
                &[b"one\ntw", b"o\nthr"],
                &[b"g:t: one\n", b"g:t: two\n"],
                b"g:t: thr\n",
            ),
            (&[b"\n"], &[b"g:t: \n"], b""),
            (&[b"\xff\xfe\n"], &[b"g:t: \xff\xfe\n"], b""),
        ];
        for (chunks, outs, end) in rows {
            let mut l = Lines::new(b"g:t: ".to_vec());
            for (c, want) in chunks.iter().zip(outs.iter()) {
                assert_eq!(l.push(c), want.to_vec(), "{chunks:?}");
            }
            assert_eq!(l.finish(), end.to_vec(), "{chunks:?}");
        }
        // A line longer than LINE_MAX: a piece, then the rest.
        let mut l = Lines::new(b"g:t: ".to_vec());
        assert_eq!(l.push(&long), long_out);
        assert_eq!(l.push(b"\n"), b"g:t: xxxxxxxxxx\n".to_vec());
    }
}
