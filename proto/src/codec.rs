//! The codec of every AutoGit RPC: prost, with small initial buffers.
//!
//! tonic allocates an encode and a decode buffer of 8 KiB each when a stream
//! opens, whatever its messages. An agent's `Fleet.Session` stream lives as
//! long as the agent is connected and carries messages of a few hundred
//! bytes, so on a coordinator those two buffers were about a third of the
//! memory each connected agent costs (`docs/benchmarks.md`, "Fleet
//! sessions"). Buffers still grow for a larger message, as before.

use std::marker::PhantomData;

use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstDecoder, ProstEncoder};

/// Initial size of a stream's encode and decode buffers.
pub const INITIAL_BUFFER: usize = 1024;
/// tonic's default: how much encoded data a stream writes before it yields.
const YIELD_THRESHOLD: usize = 32 * 1024;

fn settings() -> BufferSettings {
    BufferSettings::new(INITIAL_BUFFER, YIELD_THRESHOLD)
}

/// `application/grpc+proto` via prost, as `tonic_prost::ProstCodec`, with
/// [`INITIAL_BUFFER`]-byte buffers.
#[derive(Debug, Clone)]
pub struct Codec1K<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for Codec1K<T, U> {
    fn default() -> Self {
        Codec1K(PhantomData)
    }
}

impl<T, U> Codec for Codec1K<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::new(settings())
    }
}
