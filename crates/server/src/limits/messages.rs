//! Message-size limits: tonic enforces `--max-request-bytes` and `--max-response-bytes`
//! on every service, but reports a message over either limit as OUT_OF_RANGE (a code for
//! "past the end of a range" that clients do not expect here). This layer, just outside
//! the services, turns those statuses into what gRPC servers answer: RESOURCE_EXHAUSTED
//! with reason `MESSAGE_TOO_LARGE` and the limit in the ErrorInfo metadata, in the
//! trailers-only response of a request too large and in the trailers of a response too
//! large. The request limit is checked on the message's length prefix, before its bytes
//! are buffered, so a huge message costs no memory. A request tonic cannot decode
//! (INTERNAL from tonic-prost) becomes INVALID_ARGUMENT with reason `MESSAGE_MALFORMED`:
//! the fault is the client's, and INTERNAL stays for tenantd's own bugs.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tenantd_domain::{Error, Reason};
use tonic::{Code, Status};

use crate::grpc::status::{malformed, to_status};
use crate::metrics::{Direction, LimitMetrics};

/// What tonic says of a request over the decoding limit.
const DECODE_TOO_LARGE: &str = "Error, decoded message length too large";
/// What tonic says of a response over the encoding limit.
const ENCODE_TOO_LARGE: &str = "Error, encoded message length too large";
/// What tonic (prost's `DecodeError`) says of a request that is not a message of its type.
const MALFORMED: &str = "failed to decode Protobuf message: ";

/// The limits and where refusals are counted.
#[derive(Debug, Clone)]
pub struct MessageLimitLayer {
    max_request: usize,
    max_response: usize,
    metrics: LimitMetrics,
}

impl MessageLimitLayer {
    /// Reports the services' `max_request` and `max_response` byte limits.
    pub fn new(max_request: usize, max_response: usize, metrics: LimitMetrics) -> Self {
        Self {
            max_request,
            max_response,
            metrics,
        }
    }

    /// Rewrites a too-large or malformed-request status in `headers` (response headers
    /// or trailers).
    fn rewrite(&self, headers: &mut http::HeaderMap) {
        let code = match headers
            .get(Status::GRPC_STATUS)
            .map(http::HeaderValue::as_bytes)
        {
            Some(b"11") => Code::OutOfRange,
            Some(b"13") => Code::Internal,
            _ => return,
        };
        let Some(status) = Status::from_header_map(headers) else {
            return;
        };
        if code == Code::Internal {
            if let Some(detail) = status.message().strip_prefix(MALFORMED) {
                replace(headers, &malformed(detail));
            }
            return;
        }
        let (direction, limit) = if status.message().starts_with(DECODE_TOO_LARGE) {
            (Direction::Request, self.max_request)
        } else if status.message().starts_with(ENCODE_TOO_LARGE) {
            (Direction::Response, self.max_response)
        } else {
            return;
        };
        self.metrics.too_large(direction);
        let refusal = to_status(Error::ResourceExhausted {
            reason: Reason::MessageTooLarge,
            detail: format!(
                "the {} message is larger than the server's limit of {limit} bytes",
                direction.as_str()
            ),
            retry_after: None,
            limit: Some(u64::try_from(limit).unwrap_or(u64::MAX)),
        });
        replace(headers, &refusal);
    }
}

/// Puts `status` in `headers` in place of the one there.
fn replace(headers: &mut http::HeaderMap, status: &Status) {
    headers.remove(Status::GRPC_MESSAGE);
    headers.remove(Status::GRPC_STATUS_DETAILS);
    if status.add_header(headers).is_err() {
        tracing::error!(code = ?status.code(), "cannot write the rewritten status");
    }
}

impl<S> tower::Layer<S> for MessageLimitLayer {
    type Service = MessageLimited<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MessageLimited {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`MessageLimitLayer`] produces.
#[derive(Debug, Clone)]
pub struct MessageLimited<S> {
    inner: S,
    layer: MessageLimitLayer,
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for MessageLimited<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<LimitedBody<ResBody>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let response = self.inner.call(request);
        let layer = self.layer.clone();
        Box::pin(async move {
            let mut response = response.await?;
            layer.rewrite(response.headers_mut());
            Ok(response.map(|inner| LimitedBody {
                inner,
                layer: Some(layer),
            }))
        })
    }
}

pin_project_lite::pin_project! {
    /// A response body whose trailers get the same rewrite (none for the default body of
    /// a call refused before reaching a service).
    #[derive(Debug, Default)]
    pub struct LimitedBody<B> {
        #[pin]
        inner: B,
        layer: Option<MessageLimitLayer>,
    }
}

impl<B: Body<Data = Bytes>> Body for LimitedBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let mut frame = ready!(this.inner.poll_frame(cx));
        if let (Some(Ok(frame)), Some(layer)) = (frame.as_mut(), this.layer.as_ref())
            && let Some(trailers) = frame.trailers_mut()
        {
            layer.rewrite(trailers);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use tonic_types::StatusExt as _;

    use super::*;

    fn layer() -> (MessageLimitLayer, prometheus::Registry) {
        let registry = prometheus::Registry::new();
        let metrics = LimitMetrics::register(&registry).expect("metrics");
        (MessageLimitLayer::new(1024, 2048, metrics), registry)
    }

    fn headers_of(status: &Status) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        status.add_header(&mut headers).expect("headers");
        headers
    }

    #[test]
    fn tonics_too_large_statuses_become_resource_exhausted_with_the_limit() {
        let (layer, _registry) = layer();
        for (message, limit, direction) in [
            (
                "Error, decoded message length too large: found 6291461 bytes, the limit is: 1024 bytes",
                "1024",
                "request",
            ),
            (
                "Error, encoded message length too large: found 4096 bytes, the limit is: 2048 bytes",
                "2048",
                "response",
            ),
        ] {
            let mut headers = headers_of(&Status::out_of_range(message));
            layer.rewrite(&mut headers);
            let status = Status::from_header_map(&headers).expect("a status");
            assert_eq!(status.code(), Code::ResourceExhausted, "{message}");
            assert!(status.message().contains(direction), "{}", status.message());
            let info = status.get_details_error_info().expect("ErrorInfo");
            assert_eq!(info.reason, "MESSAGE_TOO_LARGE");
            assert_eq!(info.metadata["limit"], limit);
        }
    }

    #[test]
    fn a_request_tonic_cannot_decode_becomes_invalid_argument_message_malformed() {
        let (layer, _registry) = layer();
        let mut headers = headers_of(&Status::internal(
            "failed to decode Protobuf message: CreateTenantRequest.tenant: invalid wire type",
        ));
        layer.rewrite(&mut headers);
        let status = Status::from_header_map(&headers).expect("a status");
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(
            status
                .message()
                .ends_with("CreateTenantRequest.tenant: invalid wire type"),
            "{}",
            status.message()
        );
        let info = status.get_details_error_info().expect("ErrorInfo");
        assert_eq!(info.reason, "MESSAGE_MALFORMED");
    }

    #[test]
    fn other_statuses_are_left_alone() {
        let (layer, _registry) = layer();
        for status in [
            Status::out_of_range("page past the end"),
            Status::resource_exhausted("Error, decoded message length too large"),
            Status::internal("internal error"),
            Status::internal("Error, decoded message length too large"),
            Status::ok(""),
        ] {
            let mut headers = headers_of(&status);
            let before = headers.clone();
            layer.rewrite(&mut headers);
            assert_eq!(headers, before, "{status:?}");
        }
    }
}
