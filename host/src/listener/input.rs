//! The buffer a session reads its client through: small while the client sends commands, so
//! that an idle session holds little more than its socket, and large while a message comes in
//! (DATA, BDAT), so that a big message takes few reads. Nothing is zeroed: the buffer's pages
//! are touched only as far as input arrives.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt};

/// Read size while commands arrive.
pub const COMMAND_CHUNK: usize = 4 * 1024;
/// Read size while a message arrives.
pub const BULK_CHUNK: usize = 64 * 1024;

/// A buffered reader with the two read sizes above (see the module documentation).
#[derive(Debug)]
pub struct Input<R> {
    inner: R,
    buf: Vec<u8>,
    /// Bytes before this one are consumed.
    pos: usize,
    bulk: bool,
}

impl<R: AsyncRead + Unpin> Input<R> {
    /// Reading `inner`, in command mode, with no buffer allocated yet.
    pub fn new(inner: R) -> Self {
        Self::with_buffered(inner, Vec::new())
    }

    /// Reading `inner` after `buffered`, bytes of the stream already read (past a PROXY
    /// header).
    pub fn with_buffered(inner: R, buffered: Vec<u8>) -> Self {
        Self { inner, buf: buffered, pos: 0, bulk: false }
    }

    /// Read in large chunks (a message is coming) or small ones (commands). Going back to
    /// small chunks frees the large buffer once what it holds is consumed.
    pub fn set_bulk(&mut self, bulk: bool) {
        self.bulk = bulk;
    }

    /// What has been read and not consumed yet.
    pub fn buffer(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    /// The unconsumed bytes, reading more first when there are none; empty at the end of the
    /// stream. Cancel-safe: a read cut short loses nothing.
    pub async fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.pos == self.buf.len() {
            let chunk = if self.bulk { BULK_CHUNK } else { COMMAND_CHUNK };
            if self.buf.capacity() > chunk {
                self.buf = Vec::new();
            } else {
                self.buf.clear();
            }
            self.pos = 0;
            self.buf.reserve_exact(chunk);
            // Into the spare capacity only (reserved above), without zeroing it first.
            self.inner.read_buf(&mut self.buf).await?;
        }
        Ok(&self.buf[self.pos..])
    }

    /// Mark `n` bytes of [`Self::buffer`] as used.
    pub fn consume(&mut self, n: usize) {
        self.pos = self.pos.saturating_add(n).min(self.buf.len());
    }

    /// The reader, dropping whatever was buffered.
    pub fn into_inner(self) -> R {
        self.inner
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn reads_in_the_chunk_size_of_its_mode_and_frees_the_large_buffer() {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let mut input = Input::new(server);
        client.write_all(&vec![b'a'; 200_000]).await.unwrap();

        let first = input.fill_buf().await.unwrap().len();
        assert_eq!(first, COMMAND_CHUNK, "command mode reads at most COMMAND_CHUNK");
        input.consume(10);
        assert_eq!(input.buffer().len(), COMMAND_CHUNK - 10);
        // Switching mode leaves unconsumed bytes in place.
        input.set_bulk(true);
        assert_eq!(input.fill_buf().await.unwrap().len(), COMMAND_CHUNK - 10);
        input.consume(COMMAND_CHUNK);
        assert_eq!(input.fill_buf().await.unwrap().len(), BULK_CHUNK);
        input.consume(100);
        input.set_bulk(false);
        // The large buffer stays until it is used up, then a small one replaces it.
        assert_eq!(input.fill_buf().await.unwrap().len(), BULK_CHUNK - 100);
        input.consume(usize::MAX);
        assert_eq!(input.fill_buf().await.unwrap().len(), COMMAND_CHUNK);
        assert!(input.buf.capacity() < BULK_CHUNK);

        // Everything arrives, in order, and the end of the stream reads as empty.
        let mut total = COMMAND_CHUNK + BULK_CHUNK + COMMAND_CHUNK;
        input.consume(usize::MAX);
        drop(client);
        loop {
            let n = input.fill_buf().await.unwrap().len();
            if n == 0 {
                break;
            }
            total += n;
            input.consume(n);
        }
        assert_eq!(total, 200_000);
    }
}
