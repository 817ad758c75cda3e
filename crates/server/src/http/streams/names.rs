//! The protocol's response header names, parsed once (a `&str` name is parsed on every use).
//! Request headers are read through [`super::headers`].

use http::HeaderName;

macro_rules! names {
    ($($id:ident = $s:literal;)*) => {
        $(pub static $id: HeaderName = HeaderName::from_static($s);)*
    };
}

names! {
    STREAM_CLOSED = "stream-closed";
    STREAM_TTL = "stream-ttl";
    STREAM_EXPIRES_AT = "stream-expires-at";
    STREAM_NEXT_OFFSET = "stream-next-offset";
    STREAM_UP_TO_DATE = "stream-up-to-date";
    STREAM_CURSOR = "stream-cursor";
    STREAM_DURABILITY = "stream-durability";
    STREAM_SSE_DATA_ENCODING = "stream-sse-data-encoding";
    PRODUCER_EPOCH = "producer-epoch";
    PRODUCER_SEQ = "producer-seq";
    CROSS_ORIGIN_RESOURCE_POLICY = "cross-origin-resource-policy";
}
