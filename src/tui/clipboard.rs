//! What `y` and `c` copy, and how it reaches the clipboard: OSC 52, which terminals (and tmux
//! with `set-clipboard on`) pass to the system clipboard, also over SSH.

use base64::Engine;

use crate::store::StoredHttpRequest;

/// A stored request as a curl command to run again by hand. Secrets were redacted when it was
/// stored; they stay `REDACTED` here, for the engineer to fill in.
pub fn curl_command(request: &StoredHttpRequest) -> String {
    let quote = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
    let mut out =
        String::from("# secrets were redacted when stored: replace REDACTED before running\n");
    out.push_str(&format!(
        "curl -X POST {}",
        quote(request.url.as_deref().unwrap_or(""))
    ));
    if let Some(serde_json::Value::Array(headers)) = &request.headers {
        for h in headers {
            let (Some(name), Some(value)) = (h[0].as_str(), h[1].as_str()) else {
                continue;
            };
            out.push_str(&format!(" \\\n  -H {}", quote(&format!("{name}: {value}"))));
        }
    }
    if let Some(body) = &request.body {
        out.push_str(&format!(" \\\n  --data-raw {}", quote(body)));
    }
    out.push('\n');
    out
}

/// The OSC 52 sequence that puts `text` on the clipboard.
pub fn osc52(text: &str) -> String {
    format!(
        "\x1b]52;c;{}\x07",
        base64::engine::general_purpose::STANDARD.encode(text)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn curl_quotes_what_the_shell_would_break_on() {
        let request = StoredHttpRequest {
            id: 1,
            started_at_ms: 0,
            latency_ms: None,
            item_count: 1,
            url: Some("https://graph.facebook.com/v21.0/123/events?access_token=REDACTED".into()),
            headers: Some(serde_json::json!([["content-type", "application/json"]])),
            body: Some(r#"{"name":"O'Brien"}"#.into()),
            status_code: Some(500),
            response_body: None,
            error: None,
        };
        let curl = curl_command(&request);
        assert!(
            curl.contains(
                "curl -X POST 'https://graph.facebook.com/v21.0/123/events?access_token=REDACTED'"
            ),
            "{curl}"
        );
        assert!(
            curl.contains("-H 'content-type: application/json'"),
            "{curl}"
        );
        assert!(
            curl.contains(r#"--data-raw '{"name":"O'\''Brien"}'"#),
            "{curl}"
        );
        assert_eq!(osc52("hi"), "\x1b]52;c;aGk=\x07");
    }
}
