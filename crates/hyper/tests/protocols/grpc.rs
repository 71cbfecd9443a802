//! gRPC end to end with tonic: a client, the balancer, two weighted `h2c://` servers;
//! unary and server-streaming calls, the split, and the `grpc-status` trailer.

#![allow(clippy::result_large_err)] // tonic's `Status` is what its traits return

use core::convert::Infallible;
use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};

use http::uri::PathAndQuery;
use roundrobin_core::ServerUrl;
use roundrobin_hyper::{spawn_on, Balancer, Forwarder};
use tonic::body::BoxBody;
use tonic::codec::ProstCodec;
use tonic::server::{Grpc, NamedService, ServerStreamingService, UnaryService};
use tonic::transport::{Channel, Server};
use tonic::{Code, Request, Response, Status};

use crate::common::{pool, run, Backend};

/// The one message type: a text.
#[derive(Clone, PartialEq, prost::Message)]
struct Text {
    #[prost(string, tag = "1")]
    text: String,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// `test.Echo`: `Unary` answers `<name>:<text>`; `Count` streams `<name>:1..=n` for
/// `n` = the request text, or fails with `INVALID_ARGUMENT` when it is no number.
#[derive(Clone)]
struct Echo(&'static str);

impl NamedService for Echo {
    const NAME: &'static str = "test.Echo";
}

struct Unary(&'static str);

impl UnaryService<Text> for Unary {
    type Response = Text;
    type Future = BoxFuture<Result<Response<Text>, Status>>;
    fn call(&mut self, req: Request<Text>) -> Self::Future {
        let text = format!("{}:{}", self.0, req.into_inner().text);
        Box::pin(async move { Ok(Response::new(Text { text })) })
    }
}

struct Count(&'static str);

type TextStream = tokio_stream::Iter<std::vec::IntoIter<Result<Text, Status>>>;

impl ServerStreamingService<Text> for Count {
    type Response = Text;
    type ResponseStream = TextStream;
    type Future = BoxFuture<Result<Response<TextStream>, Status>>;
    fn call(&mut self, req: Request<Text>) -> Self::Future {
        let name = self.0;
        Box::pin(async move {
            let n: u32 = req
                .into_inner()
                .text
                .parse()
                .map_err(|_| Status::invalid_argument("not a number"))?;
            let texts: Vec<_> = (1..=n)
                .map(|i| {
                    Ok(Text {
                        text: format!("{name}:{i}"),
                    })
                })
                .collect();
            Ok(Response::new(tokio_stream::iter(texts)))
        })
    }
}

impl tower_service::Service<http::Request<BoxBody>> for Echo {
    type Response = http::Response<BoxBody>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<BoxBody>) -> Self::Future {
        let name = self.0;
        Box::pin(async move {
            let mut grpc = Grpc::new(ProstCodec::<Text, Text>::default());
            Ok(match req.uri().path() {
                "/test.Echo/Unary" => grpc.unary(Unary(name), req).await,
                "/test.Echo/Count" => grpc.server_streaming(Count(name), req).await,
                _ => Status::unimplemented("no such method").into_http(),
            })
        })
    }
}

/// A tonic server of [`Echo`] named `name`.
async fn grpc_server(name: &'static str) -> Backend {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming =
        tonic::transport::server::TcpIncoming::from_listener(listener, true, None).unwrap();
    let task = tokio::spawn(async move {
        let _ = Server::builder()
            .add_service(Echo(name))
            .serve_with_incoming(incoming)
            .await;
    });
    Backend::new(addr, task)
}

#[test]
fn unary_and_streaming_calls_pass_through_split_by_weight_with_their_status() {
    run(async {
        let (a, b) = (grpc_server("a").await, grpc_server("b").await);
        let pool = pool(&[
            (ServerUrl::parse(&format!("h2c://{}", a.addr)).unwrap(), 2),
            (ServerUrl::parse(&format!("h2c://{}", b.addr)).unwrap(), 1),
        ]);
        let proxy = spawn_on(
            "127.0.0.1:0",
            Balancer::builder(pool).service(Forwarder::new()),
        )
        .await
        .unwrap();
        let channel = Channel::from_shared(format!("http://{}", proxy.local_addr()))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = tonic::client::Grpc::new(channel);

        let mut counts = [0; 2];
        for i in 0..30 {
            client.ready().await.unwrap();
            let res = client
                .unary(
                    Request::new(Text {
                        text: format!("hi{i}"),
                    }),
                    PathAndQuery::from_static("/test.Echo/Unary"),
                    ProstCodec::<Text, Text>::default(),
                )
                .await
                .unwrap()
                .into_inner();
            let (server, text) = res.text.split_once(':').unwrap();
            assert_eq!(text, format!("hi{i}"));
            counts[usize::from(server == "b")] += 1;
        }
        assert_eq!(counts, [20, 10]);

        // A stream, its messages in order, ended by the grpc-status trailer: OK.
        client.ready().await.unwrap();
        let mut stream = client
            .server_streaming(
                Request::new(Text { text: "5".into() }),
                PathAndQuery::from_static("/test.Echo/Count"),
                ProstCodec::<Text, Text>::default(),
            )
            .await
            .unwrap()
            .into_inner();
        let mut got = Vec::new();
        while let Some(m) = stream.message().await.unwrap() {
            got.push(m.text);
        }
        let server = &got[0][..1];
        let want: Vec<_> = (1..=5).map(|i| format!("{server}:{i}")).collect();
        assert_eq!(got, want);

        // An error status travels in the trailers (a trailers-only response).
        client.ready().await.unwrap();
        let err = client
            .server_streaming(
                Request::new(Text { text: "x".into() }),
                PathAndQuery::from_static("/test.Echo/Count"),
                ProstCodec::<Text, Text>::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert_eq!(err.message(), "not a number");
    });
}
