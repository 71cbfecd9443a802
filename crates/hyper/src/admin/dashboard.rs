//! `GET /`: the live dashboard, one self-contained page (`dashboard.html`: inline CSS
//! and JavaScript, no external resource), and the token prompt answered with 401.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;

use super::api::with_type;

/// The page: it polls `GET /stats` once a second and draws the last minute.
const PAGE: &str = include_str!("dashboard.html");

/// Asks for the token, then opens `/?token=..`.
const LOGIN: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>roundrobin admin: token needed</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{font:15px system-ui,sans-serif;margin:3rem auto;max-width:28rem;color:#1f2933}
input,button{font:inherit;padding:.4rem .6rem}input{width:16rem}</style></head>
<body><h1>roundrobin admin</h1>
<p>This admin API needs its token (the content of the proxy's <code>--admin-token-file</code>).</p>
<form method="get" action="/"><input type="password" name="token" autocomplete="current-password"
 placeholder="token" autofocus required> <button>Open dashboard</button></form>
<script>
// A reload of the dashboard (its address no longer holds the token): try the token this
// tab kept, once; if the server refuses it too, this form shows.
try {
  const kept = sessionStorage.getItem("roundrobin-admin-token");
  sessionStorage.removeItem("roundrobin-admin-token");
  if (kept) location.replace("/?token=" + encodeURIComponent(kept));
} catch (e) {}
</script>
</body></html>
"#;

/// What a browser may do with these pages: nothing but run their own inline code and
/// call back this origin; never framed, never sending the URL (it may hold the token)
/// as a referrer.
const CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                   connect-src 'self'; img-src data:; form-action 'self'; base-uri 'none'; \
                   frame-ancestors 'none'";

fn html(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut res = with_type(
        status,
        Bytes::from_static(body.as_bytes()),
        "text/html; charset=utf-8",
    );
    let headers = res.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    res
}

/// The dashboard, 200.
pub(super) fn page() -> Response<Full<Bytes>> {
    html(StatusCode::OK, PAGE)
}

/// The token prompt, 401 (the caller adds `WWW-Authenticate`).
pub(super) fn login() -> Response<Full<Bytes>> {
    html(StatusCode::UNAUTHORIZED, LOGIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        for page in [PAGE, LOGIN] {
            for outside in ["src=", "href=", "url(", "@import", "https:", "//cdn"] {
                assert!(!page.contains(outside), "{outside}");
            }
        }
        assert!(PAGE.contains("stats"));
    }
}
