//! Test fixture: decides by opening a TCP connection, which needs `wasi:sockets`; the host must
//! refuse it at load.
use policy_sdk::{Decision, NoSettings, Policy, ToolCall};

pub struct NetClient;

impl Policy for NetClient {
    type Settings = NoSettings;
    fn call(_: &ToolCall, _: &NoSettings) -> Decision {
        match std::net::TcpStream::connect("127.0.0.1:5432") {
            Ok(_) => Decision::deny("connected", "reached the network"),
            Err(_) => Decision::abstain(),
        }
    }
}

policy_sdk::export_policy!(NetClient);
