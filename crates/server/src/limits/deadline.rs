//! Call deadlines: every call ends by the client's `grpc-timeout` or by the server's own
//! limit (30 s), whichever comes first, with DEADLINE_EXCEEDED (reason
//! `DEADLINE_EXCEEDED`). tonic's built-in timeout answers CANCELLED and sits outside the
//! call layers (metrics and audit would see a call dropped, not a deadline), so tenantd
//! keeps its own, inside the audit layer. Like tonic's, it bounds the handler's response:
//! a stream's messages are bounded by the stream's own lifetime.
//!
//! tonic still reads `grpc-timeout` itself and ends the call at that moment with
//! CANCELLED ("Timeout expired"), outside every layer; so this deadline fires
//! [`AHEAD_OF_TONIC`] before the client's, and the client always gets DEADLINE_EXCEEDED,
//! counted and audited.
//!
//! When the deadline fires, the handler's future is dropped: a transaction in progress is
//! never committed (its connection rolls it back), so a call past its deadline changes
//! nothing.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::grpc::status::deadline_exceeded;

/// How much sooner than the client's `grpc-timeout` this deadline fires, so that it always
/// fires before tonic's own timer for the same header (1 ms timer ticks apart, either
/// could fire first).
pub const AHEAD_OF_TONIC: Duration = Duration::from_millis(5);

/// Tower layer ending each call at its deadline.
#[derive(Debug, Clone, Copy)]
pub struct DeadlineLayer {
    longest: Duration,
}

impl DeadlineLayer {
    /// Calls last at most `longest`, or less when the client asks.
    pub fn new(longest: Duration) -> Self {
        Self { longest }
    }
}

impl<S> tower::Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Deadline {
            inner,
            longest: self.longest,
        }
    }
}

/// The service [`DeadlineLayer`] produces.
#[derive(Debug, Clone)]
pub struct Deadline<S> {
    inner: S,
    longest: Duration,
}

/// The duration a `grpc-timeout` header value asks for: 1 to 8 digits and a unit (`H`,
/// `M`, `S`, `m`, `u`, `n`), per the gRPC HTTP/2 protocol. `None` when malformed.
pub fn parse_grpc_timeout(value: &[u8]) -> Option<Duration> {
    let (unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let amount: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(amount * 3600),
        b'M' => Duration::from_secs(amount * 60),
        b'S' => Duration::from_secs(amount),
        b'm' => Duration::from_millis(amount),
        b'u' => Duration::from_micros(amount),
        b'n' => Duration::from_nanos(amount),
        _ => return None,
    })
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for Deadline<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let asked = request
            .headers()
            .get("grpc-timeout")
            .and_then(|value| parse_grpc_timeout(value.as_bytes()));
        let limit = asked.map_or(self.longest, |asked| asked.min(self.longest));
        let fires = match asked {
            Some(asked) if asked <= self.longest => asked.saturating_sub(AHEAD_OF_TONIC),
            _ => self.longest,
        };
        let response = self.inner.call(request);
        Box::pin(async move {
            match tokio::time::timeout(fires, response).await {
                Ok(response) => response,
                Err(_) => Ok(deadline_exceeded(limit).into_http()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_in_every_unit_and_malformed_ones_are_ignored() {
        assert_eq!(parse_grpc_timeout(b"50m"), Some(Duration::from_millis(50)));
        assert_eq!(parse_grpc_timeout(b"2H"), Some(Duration::from_hours(2)));
        assert_eq!(parse_grpc_timeout(b"3M"), Some(Duration::from_mins(3)));
        assert_eq!(parse_grpc_timeout(b"10S"), Some(Duration::from_secs(10)));
        assert_eq!(
            parse_grpc_timeout(b"99999999u"),
            Some(Duration::from_micros(99_999_999))
        );
        assert_eq!(parse_grpc_timeout(b"7n"), Some(Duration::from_nanos(7)));
        for bad in [
            &b""[..],
            b"m",
            b"123456789m",
            b"12x",
            b"-5S",
            b"1.5S",
            b"5 S",
        ] {
            assert_eq!(
                parse_grpc_timeout(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_past_its_deadline_ends_with_deadline_exceeded() {
        use tonic_types::StatusExt as _;
        use tower::{Service as _, ServiceExt as _};

        let slow = tower::service_fn(|_: http::Request<()>| async {
            tokio::time::sleep(Duration::from_mins(1)).await;
            Ok::<_, std::convert::Infallible>(http::Response::new(String::from("late")))
        });
        let mut service = tower::Layer::layer(&DeadlineLayer::new(Duration::from_secs(30)), slow);
        let request = http::Request::builder()
            .header("grpc-timeout", "50m")
            .body(())
            .expect("request");
        let started = tokio::time::Instant::now();
        let response = service
            .ready()
            .await
            .expect("ready")
            .call(request)
            .await
            .expect("a response");
        assert_eq!(
            started.elapsed(),
            Duration::from_millis(45),
            "the client's deadline, ahead of tonic's timer"
        );
        let status = tonic::Status::from_header_map(response.headers()).expect("a status");
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
        assert_eq!(
            status.get_details_error_info().expect("ErrorInfo").reason,
            "DEADLINE_EXCEEDED"
        );

        // Without a grpc-timeout (or with a longer one), the server's own limit.
        let request = http::Request::builder()
            .header("grpc-timeout", "5H")
            .body(())
            .expect("request");
        let started = tokio::time::Instant::now();
        let _ = service.ready().await.expect("ready").call(request).await;
        assert_eq!(started.elapsed(), Duration::from_secs(30));
    }
}
