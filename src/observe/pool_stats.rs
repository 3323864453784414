//! Scraping the app's own view of its pool (`spec.poolStats`) from every pod: HTTP GET
//! `http://<podIP>:<port><path>` with a timeout, a body-size limit and bounded
//! concurrency. Each pod's result is a number or a reason — never a silent zero.

use std::{net::IpAddr, time::Duration};

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};

use crate::{
    observation::{Measured, PoolClaims},
    policy::{StatsFormat, metric_selector::MetricSelector, validate::ResolvedPoolStats},
};

/// Largest response body read from a stats endpoint.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// Scrapes pool-stats endpoints.
#[derive(Clone)]
pub struct Scraper {
    client: Client<HttpConnector, Empty<Bytes>>,
    concurrency: usize,
    max_body: usize,
}

impl Scraper {
    pub fn new(concurrency: usize) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Self {
            client,
            concurrency: concurrency.max(1),
            max_body: MAX_BODY_BYTES,
        }
    }

    /// Every pod's claims, in the order of `ips`, at most `concurrency` requests at a time.
    pub async fn scrape_all(&self, source: &ResolvedPoolStats, ips: &[IpAddr]) -> Vec<Measured<PoolClaims>> {
        // Unordered, so a hung pod holds one slot for its timeout instead of stalling the
        // whole window behind it; results go back to their pod's slot.
        let mut results: Vec<(usize, Measured<PoolClaims>)> =
            futures::stream::iter(ips.iter().copied().enumerate().collect::<Vec<_>>())
                .map(|(i, ip)| async move { (i, self.scrape(source, ip).await) })
                .buffer_unordered(self.concurrency)
                .collect()
                .await;
        results.sort_by_key(|(i, _)| *i);
        results.into_iter().map(|(_, m)| m).collect()
    }

    /// Claims per instance, in order; an instance without an address is unknown.
    pub async fn scrape_instances(
        &self,
        source: &ResolvedPoolStats,
        ips: &[Option<IpAddr>],
    ) -> Vec<Measured<PoolClaims>> {
        let known: Vec<IpAddr> = ips.iter().flatten().copied().collect();
        let mut scraped = self.scrape_all(source, &known).await.into_iter();
        ips.iter()
            .map(|ip| match ip {
                Some(_) => scraped
                    .next()
                    .unwrap_or_else(|| Measured::Unknown("not scraped".to_owned())),
                None => Measured::Unknown("no address yet".to_owned()),
            })
            .collect()
    }

    /// One pod's claims.
    pub async fn scrape(&self, source: &ResolvedPoolStats, ip: IpAddr) -> Measured<PoolClaims> {
        let host = match ip {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("[{v6}]"),
        };
        let url = format!("http://{host}:{}{}", source.port, source.path);
        match tokio::time::timeout(source.timeout, self.fetch(&url)).await {
            Err(_) => Measured::Unknown(format!("{url}: timed out after {}", render(source.timeout))),
            Ok(Err(why)) => Measured::Unknown(format!("{url}: {why}")),
            Ok(Ok(body)) => match parse(source, &body) {
                Ok(claims) => Measured::Known(claims),
                Err(why) => Measured::Unknown(format!("{url}: {why}")),
            },
        }
    }

    async fn fetch(&self, url: &str) -> Result<Bytes, String> {
        let uri: hyper::Uri = url.parse().map_err(|e| format!("bad URL: {e}"))?;
        let response = self.client.get(uri).await.map_err(|e| {
            let source = std::error::Error::source(&e)
                .map(|s| format!(": {s}"))
                .unwrap_or_default();
            format!("request failed{source}")
        })?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("HTTP {status}"));
        }
        let body = Limited::new(response.into_body(), self.max_body);
        match body.collect().await {
            Ok(collected) => Ok(collected.to_bytes()),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                Err(format!("body larger than {} bytes", self.max_body))
            }
            Err(e) => Err(format!("reading body: {e}")),
        }
    }
}

fn render(d: Duration) -> String {
    crate::policy::duration::render(d)
}

/// Reads checked-out and tracked-active from a response body.
pub fn parse(source: &ResolvedPoolStats, body: &[u8]) -> Result<PoolClaims, String> {
    match source.format {
        StatsFormat::Json => {
            let doc: serde_json::Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
            Ok(PoolClaims {
                checked_out: json_count(&doc, &source.checked_out)?,
                tracked_active: json_count(&doc, &source.tracked_active)?,
            })
        }
        StatsFormat::Prometheus => {
            let text = std::str::from_utf8(body).map_err(|_| "not UTF-8 text".to_owned())?;
            let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
                .map_err(|e| format!("not Prometheus text: {e}"))?;
            Ok(PoolClaims {
                checked_out: metric_count(&scrape, &source.checked_out)?,
                tracked_active: metric_count(&scrape, &source.tracked_active)?,
            })
        }
    }
}

fn json_count(doc: &serde_json::Value, pointer: &str) -> Result<u32, String> {
    let value = doc.pointer(pointer).ok_or_else(|| format!("{pointer}: missing"))?;
    value
        .as_f64()
        .and_then(as_count)
        .ok_or_else(|| format!("{pointer}: {value} is not a count"))
}

fn metric_count(scrape: &prometheus_parse::Scrape, selector: &str) -> Result<u32, String> {
    let sel = MetricSelector::parse(selector).map_err(|e| e.to_string())?;
    let matching: Vec<f64> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == sel.name && sel.labels.iter().all(|(k, v)| s.labels.get(k) == Some(v.as_str())))
        .filter_map(|s| match s.value {
            prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Untyped(v) => Some(v),
            _ => None,
        })
        .collect();
    match matching.as_slice() {
        [] => Err(format!("{selector}: no such sample")),
        [v] => as_count(*v).ok_or_else(|| format!("{selector}: {v} is not a count")),
        many => Err(format!("{selector}: {} samples match; add label matchers", many.len())),
    }
}

/// A non-negative whole number that fits a u32.
fn as_count(v: f64) -> Option<u32> {
    (v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v <= f64::from(u32::MAX)).then_some(v as u32)
}
