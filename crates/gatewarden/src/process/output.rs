//! Line capture of the child's stdout and stderr: bounded lines, bounded queue, never blocking the
//! child.
//!
//! Each stream gets two tasks. The *reader* drains the pipe as fast as the child writes and puts
//! lines into a bounded queue; when the queue is full it drops the line and counts it. The
//! *forwarder* takes lines from the queue and `send`s them to the recipient, one at a time, waiting
//! for each to be handled. So memory is bounded (queue length × line limit per stream), a slow
//! recipient costs lines (counted) rather than memory, and the child never blocks on a full pipe:
//! Node writes to pipes synchronously on Linux, so a stalled pipe would stall the whole gateway.

use crate::reports::ReportTo;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{OutputStream, ProcessOutput};

/// What a reader reports when its stream ends.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct StreamSummary {
    /// Lines dropped because the queue was full (including those reported in `dropped_before`).
    pub dropped_lines: u64,
}

/// The tasks of one captured stream.
pub(super) struct StreamCapture {
    pub reader: JoinHandle<StreamSummary>,
    pub forwarder: JoinHandle<()>,
}

/// Starts the reader and forwarder of one stream.
pub(super) fn capture<R>(
    source: R,
    pid: u32,
    stream: OutputStream,
    max_line_bytes: usize,
    queue_lines: usize,
    recipient: ReportTo<ProcessOutput>,
) -> StreamCapture
where
    R: AsyncRead + Unpin + Send + 'static,
{
    let (queue, mut queued) = mpsc::channel::<ProcessOutput>(queue_lines.max(1));
    let reader = actix_rt::spawn(async move {
        let mut source = BufReader::new(source);
        let mut buffer = Vec::new();
        let mut summary = StreamSummary::default();
        let mut dropped_since_delivered = 0u64;
        loop {
            let truncated = match read_bounded_line(&mut source, max_line_bytes, &mut buffer).await
            {
                Ok(Some(truncated)) => truncated,
                Ok(None) => break,
                Err(error) => {
                    tracing::debug!(pid, ?stream, %error, "output stream read failed");
                    break;
                }
            };
            let line = ProcessOutput {
                pid,
                stream,
                line: line_text(&buffer, truncated),
                truncated,
                dropped_before: dropped_since_delivered,
            };
            match queue.try_send(line) {
                Ok(()) => dropped_since_delivered = 0,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    if dropped_since_delivered == 0 {
                        // Q2: the count reaches the log once, with the next delivered line
                        // (rate-limited there); a warning per drop episode flooded the log.
                        tracing::debug!(pid, ?stream, "output recipient is slow; dropping lines");
                    }
                    dropped_since_delivered += 1;
                    summary.dropped_lines += 1;
                }
                // The forwarder is gone (aborted): keep draining so the child never blocks.
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
        summary
    });
    let forwarder = actix_rt::spawn(async move {
        while let Some(line) = queued.recv().await {
            // `send` waits until the recipient handled the line, which is what paces the queue.
            // A recipient that has stopped makes it fail at once; the lines are then discarded.
            let _ = recipient.send(line).await;
        }
    });
    StreamCapture { reader, forwarder }
}

/// Reads one line of at most `max_bytes` bytes (without the newline) into `buffer`. The rest of a
/// longer line is read and discarded. Returns `None` at end of stream, else whether the line was
/// truncated. A last line without a newline is returned as a line.
async fn read_bounded_line<R>(
    source: &mut R,
    max_bytes: usize,
    buffer: &mut Vec<u8>,
) -> std::io::Result<Option<bool>>
where
    R: tokio::io::AsyncBufRead + Unpin,
{
    buffer.clear();
    let mut truncated = false;
    let mut read_any = false;
    loop {
        let available = source.fill_buf().await?;
        if available.is_empty() {
            return Ok(read_any.then_some(truncated));
        }
        read_any = true;
        let newline = available.iter().position(|byte| *byte == b'\n');
        let (content, consumed) = match newline {
            Some(index) => (&available[..index], index + 1),
            None => (available, available.len()),
        };
        let room = max_bytes.saturating_sub(buffer.len());
        if content.len() > room {
            buffer.extend_from_slice(&content[..room]);
            truncated = true;
        } else {
            buffer.extend_from_slice(content);
        }
        source.consume(consumed);
        if newline.is_some() {
            return Ok(Some(truncated));
        }
    }
}

/// The text of a line: a trailing `\r` removed, a UTF-8 sequence cut by truncation removed, and
/// invalid UTF-8 replaced by U+FFFD.
fn line_text(bytes: &[u8], truncated: bool) -> String {
    let mut bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
    if truncated {
        bytes = without_cut_utf8_tail(bytes);
    }
    String::from_utf8_lossy(bytes).into_owned()
}

/// Drops an incomplete multi-byte UTF-8 sequence at the very end (at most 3 bytes), so a cut does
/// not show up as a replacement character.
fn without_cut_utf8_tail(bytes: &[u8]) -> &[u8] {
    let tail_start = bytes.len().saturating_sub(3);
    for start in (tail_start..bytes.len()).rev() {
        let byte = bytes[start];
        if byte & 0b1100_0000 == 0b1000_0000 {
            continue; // continuation byte: keep looking for the lead byte
        }
        let needed = match byte {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => 1,
        };
        return if bytes.len() - start < needed {
            &bytes[..start]
        } else {
            bytes
        };
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x1_cut_multibyte_character_is_dropped() {
        let text = "aé".as_bytes(); // 'é' is 2 bytes
        assert_eq!(line_text(&text[..2], true), "a");
        assert_eq!(line_text(text, true), "aé");
        assert_eq!(line_text(b"ok\r", false), "ok");
        assert_eq!(line_text(b"\xff\xfeok", false), "\u{fffd}\u{fffd}ok");
    }

    #[test]
    fn x1_bounded_line_reader_truncates_and_resynchronises() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let input: &[u8] = b"abcdefgh\nxy\nlast";
            // A tiny buffer makes lines span several fill_buf calls.
            let mut source = tokio::io::BufReader::with_capacity(3, input);
            let mut buffer = Vec::new();
            let mut lines = Vec::new();
            while let Some(truncated) = read_bounded_line(&mut source, 4, &mut buffer)
                .await
                .expect("read")
            {
                lines.push((String::from_utf8_lossy(&buffer).into_owned(), truncated));
            }
            assert_eq!(
                lines,
                vec![
                    ("abcd".to_owned(), true),
                    ("xy".to_owned(), false),
                    ("last".to_owned(), false)
                ]
            );
        });
    }
}
