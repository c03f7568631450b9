//! The admin server is safe to expose: with `admin.token` (here from `admin.token_file`,
//! as the container image sets it) `/metrics` and `/supervision` answer 401 without the
//! bearer token and 200 with it, `/health` stays open for probes, `eventline config`
//! never prints the token, and many idle connections do not stop it from answering.

mod helpers;

use helpers::*;
use std::time::Duration;

fn get(url: &str, token: Option<&str>) -> u16 {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    let mut request = agent.get(url);
    if let Some(token) = token {
        request = request.header("Authorization", &format!("Bearer {token}"));
    }
    request.call().expect("the admin server answers").status().as_u16()
}

#[test]
fn metrics_and_supervision_need_the_token_and_health_stays_open() {
    let mut env = TestEnv::new(1);
    let token = format!("tok-{}", uuid::Uuid::new_v4().simple());
    let file = env.dir().join("admin-token");
    std::fs::write(&file, format!("{token}\n")).unwrap();
    let file = file.display().to_string();
    let extra = [("EVENTLINE__ADMIN__TOKEN_FILE", file.as_str())];
    let p = env.start_processor(&extra);
    let base = env.admin_url(p);
    wait_until("the processor is healthy", Duration::from_secs(30), || {
        get(&format!("{base}/health"), None) == 200
    });
    for path in ["/metrics", "/supervision"] {
        assert_eq!(get(&format!("{base}{path}"), None), 401, "{path} without a token");
        assert_eq!(get(&format!("{base}{path}"), Some("wrong")), 401, "{path} with a wrong token");
        assert_eq!(get(&format!("{base}{path}"), Some(&token)), 200, "{path} with the token");
    }
    wait_until("/ready answers 200 without a token", Duration::from_secs(30), || {
        get(&format!("{base}/ready"), None) == 200
    });
    // Idle connections up to the bound are held, not served: the server still answers.
    let address = base.trim_start_matches("http://").to_string();
    let idle: Vec<_> =
        (0..80).filter_map(|_| std::net::TcpStream::connect(&address).ok()).collect();
    drop(idle);
    wait_until("the server answers after idle connections", Duration::from_secs(15), || {
        get(&format!("{base}/health"), None) == 200
    });
    let (_, config, _) = env.eventline_with(&["config"], &extra);
    assert!(!config.contains(&token), "eventline config printed the token");
    assert_eq!(env.stop_processor(p), 0);
}
