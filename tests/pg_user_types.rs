//! Issue #17: binary values of user-defined types (enums, composites, domains, arrays and
//! ranges of them) are decoded through the target's catalog and masked as their types; a type
//! the catalog cannot describe for certain is withheld (NULL). Read with asyncpg, which asks
//! for binary results of every type it can decode.

mod common;

use common::{AGENT_PASSWORD, Proxy};
use tollgate::mask::pan;

async fn direct() -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(
        "host=127.0.0.1 user=postgres dbname=test",
        tokio_postgres::NoTls,
    )
    .await
    .expect("direct connection");
    tokio::spawn(conn);
    client
}

/// Runs `body` (the inside of an asyncpg `main(c)`) through `proxy`; its stdout.
async fn asyncpg(proxy: &Proxy, body: &str) -> String {
    let script = format!(
        "import asyncio, os\nimport asyncpg\nasync def main():\n    c = await asyncpg.connect(host='127.0.0.1', port=int(os.environ['PORT']), user='agent', password=os.environ['PW'], database='test', ssl=False)\n{body}\n    await c.close()\nasyncio.run(main())\n"
    );
    let out = tokio::process::Command::new("python3")
        .args(["-c", &script])
        .env("PORT", proxy.addr.port().to_string())
        .env("PW", AGENT_PASSWORD)
        .output()
        .await
        .expect("python3");
    assert!(
        out.status.success(),
        "asyncpg failed (scripts/test.sh installs it with pip): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn user_defined_types_are_decoded_and_masked_in_binary() {
    let db = direct().await;
    db.batch_execute(
        "drop table if exists ut_cards;
         drop type if exists ut_holder; drop type if exists ut_brand; drop type if exists ut_span;
         drop domain if exists ut_pan; drop domain if exists ut_num;
         create type ut_brand as enum ('visa', '4111111111111111');
         create domain ut_pan as text;
         create domain ut_num as numeric;
         create type ut_holder as (name text, pan ut_pan, n int8, brand ut_brand);
         create type ut_span as range (subtype = int8);
         create table ut_cards (id int, brand ut_brand, holder ut_holder, holders ut_holder[],
           pan ut_pan, num ut_num, brands ut_brand[], span ut_span);
         insert into ut_cards values (1, '4111111111111111',
           row('Ann', '4111 1111 1111 1111', 4111111111111111, '4111111111111111'),
           array[row('Bob', '4111-1111-1111-1111', 7, 'visa')::ut_holder],
           '4111111111111111', 4111111111111111, array['visa', '4111111111111111']::ut_brand[],
           ut_span(4111111111111111, 4111111111111112));",
    )
    .await
    .unwrap();
    let proxy = Proxy::start("").await;
    let out = asyncpg(
        &proxy,
        "    r = await c.fetchrow('select * from ut_cards where id = $1', 1)
    for k in ['brand', 'holder', 'holders', 'pan', 'num', 'brands', 'span']:
        print(k, repr(r[k]))",
    )
    .await;
    print!("{out}");
    assert!(pan::find_all(out.as_bytes()).is_empty(), "clear PAN: {out}");
    let expected = [
        "brand '411111******1111'",
        "holder <Record name='Ann' pan='4111 11** **** 1111' n=4111110000001111 brand='411111******1111'>",
        "holders [<Record name='Bob' pan='4111-11**-****-1111' n=7 brand='visa'>]",
        "pan '411111******1111'",
        "num Decimal('4111110000001111')",
        "brands ['visa', '411111******1111']",
        "span <Range [4111110000001111, 4111111111111112)>",
    ];
    assert_eq!(out.trim(), expected.join("\n"));
}

/// A type the side connection cannot see (created in the agent's open transaction) is not
/// known for certain: its binary values are withheld, not scanned as text.
#[tokio::test]
async fn a_type_the_catalog_cannot_describe_is_withheld() {
    let proxy = Proxy::start("").await;
    let out = asyncpg(
        &proxy,
        "    tr = c.transaction()
    await tr.start()
    await c.execute(\"create type ut_hidden as (pan text)\")
    v = await c.fetchval(\"select row('4111111111111111')::ut_hidden\")
    t = await c.fetchval(\"select (row('4111111111111111')::ut_hidden)::text\")
    print(repr(v), t)
    await tr.rollback()",
    )
    .await;
    print!("{out}");
    assert_eq!(out.trim(), "None (411111******1111)");
    assert!(pan::find_all(out.as_bytes()).is_empty(), "clear PAN: {out}");
}

/// A FunctionCall body: the function, no argument, the result format.
fn call(function: u32, binary: bool) -> Vec<u8> {
    let mut body = function.to_be_bytes().to_vec();
    body.extend_from_slice(&[0, 0, 0, 0]);
    body.extend_from_slice(&i16::from(binary).to_be_bytes());
    common::frame(b'F', &body)
}

/// A FunctionCall asking for a binary result is answered by the function's declared return
/// type (read from pg_proc): a bigint card number masked as a bigint, a composite's fields
/// masked, text masked; a type tollgate cannot decode for certain (an extension's base type)
/// withheld. Before, the binary bytes were scanned as if they were text.
#[tokio::test]
async fn binary_function_call_results_are_decoded_by_the_return_type() {
    let db = direct().await;
    db.batch_execute(
        "create extension if not exists citext;
         drop type if exists ut_fpair cascade;
         create type ut_fpair as (pan text, n int8);
         create or replace function ut_card_int() returns int8 language sql as 'select 4111111111111111::int8';
         create or replace function ut_card_text() returns text language sql as 'select ''card 4111111111111111''';
         create or replace function ut_card_pair() returns ut_fpair language sql as 'select row(''4111111111111111'', 4111111111111111)::ut_fpair';
         create or replace function ut_card_citext() returns citext language sql as 'select ''4111111111111111''::citext';",
    )
    .await
    .unwrap();
    let mut oids = Vec::new();
    for f in [
        "ut_card_int",
        "ut_card_text",
        "ut_card_pair",
        "ut_card_citext",
    ] {
        let row = db
            .query_one(&format!("select '{f}'::regproc::oid"), &[])
            .await
            .unwrap();
        oids.push(row.get::<_, u32>(0));
    }
    let proxy = Proxy::start("").await;
    let mut raw = common::Raw::login(proxy.addr).await;
    let answer = |seen: Vec<(u8, Vec<u8>)>| {
        assert_eq!(seen[0].0, b'V', "{seen:?}");
        let v = seen[0].1.clone();
        assert!(pan::find_all(&v).is_empty(), "clear PAN: {v:?}");
        v
    };
    raw.send(&call(oids[0], true)).await;
    let v = answer(raw.until_ready().await);
    assert_eq!(&v[..4], &8i32.to_be_bytes());
    assert_eq!(
        i64::from_be_bytes(v[4..].try_into().unwrap()),
        4111110000001111
    );
    raw.send(&call(oids[1], true)).await;
    assert_eq!(
        &answer(raw.until_ready().await)[4..],
        b"card 411111******1111"
    );
    raw.send(&call(oids[2], true)).await;
    let v = answer(raw.until_ready().await);
    let record = &v[4..];
    assert_eq!(&record[..4], &2i32.to_be_bytes(), "two fields");
    assert!(
        record.windows(16).any(|w| w == b"411111******1111"),
        "{record:?}"
    );
    assert!(
        record
            .windows(8)
            .any(|w| w == 4111110000001111i64.to_be_bytes()),
        "{record:?}"
    );
    raw.send(&call(oids[3], true)).await;
    assert_eq!(
        answer(raw.until_ready().await),
        (-1i32).to_be_bytes(),
        "withheld"
    );
    // The same calls in text format: masked as text.
    raw.send(&call(oids[0], false)).await;
    assert_eq!(&answer(raw.until_ready().await)[4..], b"411111******1111");
    raw.send(&call(oids[3], false)).await;
    assert_eq!(&answer(raw.until_ready().await)[4..], b"411111******1111");
}
