import assert from "node:assert/strict";
import type { ErrorPayload } from "../src/types.ts";
import {
  escapeSlackText,
  SLACK_LIMITS,
  type SlackBlock,
  type SlackMessage,
  slackMessage,
  type SlackTextObject,
} from "../src/slack_message.ts";

const base: ErrorPayload = {
  error_name: "TypeError",
  error_message: "x is not a function",
  traceback: [
    { filename: "<cell>", fun_name: "<module>", lineno: 3 },
    { filename: "lib/util.ts", fun_name: "helper", lineno: 12 },
    { filename: "<native>", fun_name: "JSON.parse", lineno: null },
  ],
  first_line: "const y = x();",
  execution_count: 4,
  notebook: "demo",
};

/** Every text object of a message's blocks. */
function textObjects(message: SlackMessage): SlackTextObject[] {
  return message.blocks.flatMap((block: SlackBlock) =>
    block.type === "context" ? block.elements : [block.text]
  );
}

/** The text of a header or section block, by index (negative from the end). */
function blockText(message: SlackMessage, index: number): string {
  const block = message.blocks.at(index);
  if (block === undefined || block.type === "context") {
    throw new Error(`block ${index} is ${block?.type ?? "missing"}`);
  }
  return block.text.text;
}

/** The texts of the context block's elements. */
function contextTexts(message: SlackMessage): string[] {
  const block = message.blocks.find((b) => b.type === "context");
  if (block?.type !== "context") throw new Error("no context block");
  return block.elements.map((element) => element.text);
}

/** The one link this module may write. */
const OWN_LINK_REGEXP = /<https?:\/\/[^\s<>|]+\|Open in dashboard>/g;

/**
 * Asserts the invariants that must hold for any input: Slack's limits, no
 * way to ping or link, balanced code formatting, no bidi or control
 * characters, well-formed strings.
 */
function assertSafe(message: SlackMessage): void {
  const json = JSON.stringify(message);
  assert(json.length < 20_000, `JSON of ${json.length} characters`);
  assert(message.blocks.length >= 1);
  assert(message.blocks.length <= SLACK_LIMITS.blocks);
  assert(message.text.length >= 1);
  assert(message.text.length <= SLACK_LIMITS.fallbackText, message.text);
  let total = 0;
  for (const block of message.blocks) {
    if (block.type === "header") {
      assert.deepEqual(block.text.type, "plain_text");
      assert(block.text.text.length <= SLACK_LIMITS.headerText);
    }
    if (block.type === "section") {
      assert(block.text.text.length <= SLACK_LIMITS.sectionText);
    }
    if (block.type === "context") {
      assert(block.elements.length >= 1);
      assert(block.elements.length <= SLACK_LIMITS.contextElements);
    }
  }
  for (const object of textObjects(message)) {
    const text = object.text;
    total += text.length;
    assert(text.length >= 1, "empty text object");
    assert(text.length <= SLACK_LIMITS.textObject);
    if (object.type === "mrkdwn") {
      assert.deepEqual(object.verbatim, true);
      // Code fences and inline code spans stay balanced.
      const fences = text.split("```").length - 1;
      assert.deepEqual(fences % 2, 0, `unbalanced fences in ${text}`);
      const ticks = text.replaceAll("```", "").split("`").length - 1;
      assert.deepEqual(ticks % 2, 0, `unbalanced backticks in ${text}`);
    }
  }
  assert(total <= SLACK_LIMITS.totalBlockText, `block text ${total}`);
  for (
    const text of [
      message.text,
      ...textObjects(message).map((t) => t.text),
    ]
  ) {
    const withoutOwnLink = text.replace(OWN_LINK_REGEXP, "");
    assert(!/[<>]/.test(withoutOwnLink), `raw < or > in ${text}`);
    assert(!/&(?!amp;|lt;|gt;)/.test(text), `unescaped & in ${text}`);
    assert(
      !/@(channel|here|everyone)\b/i.test(text),
      `bare broadcast in ${text}`,
    );
    assert(!/[\u061C\u200E\u200F\u202A-\u202E\u2066-\u2069]/.test(text));
    // deno-lint-ignore no-control-regex
    assert(!/[\u0000-\u0008\u000B-\u001F\u007F-\u009F]/.test(text));
    assert(text.isWellFormed());
  }
}

Deno.test("escapeSlackText() escapes &, < and > and nothing else", () => {
  assert.deepEqual(
    escapeSlackText(
      "<!channel> <@U123> <https://evil|click> a&b *x* _y_ ~z~ `c`",
    ),
    "&lt;!channel&gt; &lt;@U123&gt; &lt;https://evil|click&gt; a&amp;b *x* _y_ ~z~ `c`",
  );
  assert.deepEqual(escapeSlackText("&lt;"), "&amp;lt;");
  assert.deepEqual(escapeSlackText(""), "");
});

Deno.test("slackMessage() lays out header, message, context, first line and traceback", () => {
  assert.deepEqual(slackMessage(base), {
    text: "TypeError: x is not a function (demo, cell [4])",
    blocks: [
      {
        type: "header",
        text: { type: "plain_text", text: "TypeError", emoji: false },
      },
      {
        type: "section",
        text: {
          type: "mrkdwn",
          text: "```x is not a function```",
          verbatim: true,
        },
      },
      {
        type: "context",
        elements: [
          {
            type: "mrkdwn",
            text: "Notebook `demo` · cell [4]",
            verbatim: true,
          },
        ],
      },
      {
        type: "section",
        text: {
          type: "mrkdwn",
          text: "*First line*\n```const y = x();```",
          verbatim: true,
        },
      },
      {
        type: "section",
        text: {
          type: "mrkdwn",
          text:
            "*Traceback* (outermost first)\n```&lt;cell&gt;:3 in &lt;module&gt;\n" +
            "lib/util.ts:12 in helper\n&lt;native&gt; in JSON.parse```",
          verbatim: true,
        },
      },
    ],
  });
});

Deno.test("slackMessage() puts title, count line and link around the error", () => {
  const message = slackMessage(base, {
    title: "New error group",
    countLine: "12 reports from 3 sessions",
    link: "https://errors.example.com/groups/42?tab=a&x=1|2",
  });
  assertSafe(message);
  assert.deepEqual(message.blocks[0], {
    type: "header",
    text: { type: "plain_text", text: "New error group", emoji: false },
  });
  assert.deepEqual(message.blocks[1], {
    type: "section",
    text: {
      type: "mrkdwn",
      text: "`TypeError`\n```x is not a function```",
      verbatim: true,
    },
  });
  assert.deepEqual(message.blocks[2], {
    type: "context",
    elements: [
      { type: "mrkdwn", text: "Notebook `demo` · cell [4]", verbatim: true },
      { type: "plain_text", text: "12 reports from 3 sessions", emoji: false },
      {
        type: "mrkdwn",
        text:
          "<https://errors.example.com/groups/42?tab=a&amp;x=1%7C2|Open in dashboard>",
        verbatim: true,
      },
    ],
  });
  assert.deepEqual(
    message.text,
    "New error group: TypeError: x is not a function (demo, cell [4])",
  );
});

Deno.test("slackMessage() leaves out links that are not plain http(s) URLs", () => {
  for (
    const link of [
      "javascript:alert(1)",
      "ftp://example.com/x",
      "not a url",
      "",
      "https://user:pass@example.com/",
      "data:text/html,<b>x</b>",
      "https://example.com/" + "a".repeat(2000),
      "slack://channel?id=C1",
    ]
  ) {
    const message = slackMessage(base, { link });
    assertSafe(message);
    assert.deepEqual(contextTexts(message).length, 1, link);
  }
  // The URL serializer percent-encodes what would break out of a Slack link.
  const message = slackMessage(base, { link: 'https://example.com/a b<c>"d' });
  assertSafe(message);
  assert(
    JSON.stringify(message).includes(
      "<https://example.com/a%20b%3Cc%3E%22d|Open in dashboard>",
    ),
  );
});

Deno.test("slackMessage() escapes mentions and links so they can never ping or link", () => {
  const hostile =
    "<!channel> <!here> <!everyone> <@U123> <#C42> <!subteam^S1> " +
    "<https://evil.example|click> @channel @here @everyone a & b > quote";
  const message = slackMessage({
    error_name: hostile,
    error_message: hostile,
    traceback: [{ filename: hostile, fun_name: hostile, lineno: 1 }],
    first_line: hostile,
    execution_count: 1,
    notebook: hostile,
  }, { title: hostile, countLine: hostile });
  assertSafe(message);
  const json = JSON.stringify(message);
  for (const token of ["<!", "<@", "<#", "<http"]) {
    assert(!json.includes(token), token);
  }
  assert(json.includes("&lt;!channel&gt;"));
  assert(json.includes("&lt;https://evil.example|click&gt;"));
  assert(json.includes("@\u2060here"));
  assert(json.includes("a &amp; b &gt; quote"));
});

Deno.test("slackMessage() keeps user text inside code formatting, backticks included", () => {
  const message = slackMessage({
    ...base,
    error_name: "Bad`Name",
    error_message: "```\n*bold* _it_ ~strike~ > quote\n``` `x` ````",
    first_line: "const s = `${a}`; // *b*",
    notebook: "note`book",
    traceback: [{ filename: "a`.ts", fun_name: "f``", lineno: 1 }],
  }, { title: "T" });
  assertSafe(message);
  assert.deepEqual(
    blockText(message, 1),
    "`Bad\u02CBName`\n```\u02CB\u02CB\u02CB\n*bold* _it_ ~strike~ &gt; quote\n" +
      "\u02CB\u02CB\u02CB \u02CBx\u02CB \u02CB\u02CB\u02CB\u02CB```",
  );
  assert.deepEqual(
    contextTexts(message)[0],
    "Notebook `note\u02CBbook` · cell [4]",
  );
  assert.deepEqual(
    blockText(message, 3),
    "*First line*\n```const s = \u02CB${a}\u02CB; // *b*```",
  );
});

Deno.test("slackMessage() shows bidi overrides as U+FFFD and drops control characters", () => {
  const message = slackMessage({
    ...base,
    error_name: "Evil\u202Egnp.exe",
    error_message: "a\u0000b\u0007c\u001Bd\r\ne\u2066f\u200Fg\u0085h\u2028i\tj",
    first_line: "x\u202Dy\nz",
    notebook: "n\u202Eb",
  });
  assertSafe(message);
  assert.deepEqual(blockText(message, 0), "Evil\uFFFDgnp.exe");
  assert.deepEqual(
    blockText(message, 1),
    "```abcd\ne\uFFFDf\uFFFDg\nh\ni\tj```",
  );
  assert.deepEqual(blockText(message, 3), "*First line*\n```x\uFFFDy z```");
});

Deno.test("slackMessage() cuts a 10,000-character message within the section limit", () => {
  for (const char of ["a", "&", "<", "😀", "é"]) {
    const message = slackMessage({
      ...base,
      error_message: char.repeat(10_000),
    });
    assertSafe(message);
    const text = blockText(message, 1);
    assert(text.length <= SLACK_LIMITS.messageSection);
    assert(text.length >= SLACK_LIMITS.messageSection - 10);
    assert.match(text, /^```.*…```$/s);
    // The cut falls between whole characters and whole entities.
    const shown = text.slice(3, -4);
    assert.deepEqual(
      shown,
      escapeSlackText(char).repeat(shown.length / escapeSlackText(char).length),
    );
  }
});

Deno.test("slackMessage() keeps the outermost and innermost of 50 long frames", () => {
  const traceback = Array.from({ length: 50 }, (_, i) => ({
    filename: `npm:pkg@1.0.0/${"deep/".repeat(80)}file${i}.js`,
    fun_name: `fn${i}<&>`,
    lineno: i + 1,
  }));
  const message = slackMessage({ ...base, traceback });
  assertSafe(message);
  const lines = blockText(message, -1).replace(/^.*?```/s, "").replace(
    /```$/,
    "",
  )
    .split(
      "\n",
    );
  assert.match(lines[0]!, /file0\.js:1 in fn0&lt;&amp;&gt;$/);
  assert.match(lines.at(-1)!, /file49\.js:50 in fn49&lt;&amp;&gt;$/);
  assert(lines.some((line) => /^… \d+ frames omitted …$/.test(line)));
  const shown = lines.filter((line) => !line.startsWith("… ")).length;
  const omitted = Number(lines.find((l) => l.startsWith("… "))!.split(" ")[1]);
  assert.deepEqual(shown + omitted, 50);
  for (const line of lines) assert(line.length <= SLACK_LIMITS.frameLine);
  // Long paths lose their start, never the position.
  assert(lines[0]!.startsWith("…"));
});

Deno.test("slackMessage() shows empty fields as placeholders, never as empty text", () => {
  const message = slackMessage({
    error_name: "",
    error_message: "",
    traceback: [],
    first_line: "",
    execution_count: null,
    notebook: "",
  });
  assertSafe(message);
  assert.deepEqual(message, {
    text: "Error (unnamed notebook, cell unknown)",
    blocks: [
      {
        type: "header",
        text: { type: "plain_text", text: "Error", emoji: false },
      },
      {
        type: "section",
        text: { type: "mrkdwn", text: "_(no message)_", verbatim: true },
      },
      {
        type: "context",
        elements: [{
          type: "mrkdwn",
          text: "Notebook _(unnamed)_ · cell unknown",
          verbatim: true,
        }],
      },
    ],
  });
});

Deno.test("slackMessage() never throws on hostile shapes and odd values", () => {
  const odd = [
    {},
    {
      error_name: 42,
      error_message: null,
      traceback: "nope",
      execution_count: "4",
    },
    { traceback: [null, 7, "x", { filename: {}, fun_name: [], lineno: NaN }] },
    { error_message: "\uD800 lone \uDFFF surrogates", notebook: "\uDBFF" },
    {
      error_name: {
        toString() {
          throw new Error("no");
        },
      },
      execution_count: -1,
      first_line: Symbol("s"),
    },
    {
      execution_count: 1.5,
      notebook: "x".repeat(100_000),
      first_line: "y".repeat(100_000),
    },
  ];
  for (const payload of odd) {
    const message = slackMessage(payload as unknown as ErrorPayload, {
      title: "t".repeat(10_000),
      countLine: "c".repeat(10_000),
      link: "https://example.com/" + "&".repeat(400),
    });
    assertSafe(message);
  }
  assertSafe(
    slackMessage(null as unknown as ErrorPayload, null as unknown as undefined),
  );
});

Deno.test("slackMessage() stays within every limit for maximal adversarial input", () => {
  const worst = "&<>`\u202E@here😀".repeat(2_000);
  const message = slackMessage({
    error_name: worst,
    error_message: worst,
    traceback: Array.from({ length: 50 }, () => ({
      filename: worst,
      fun_name: worst,
      lineno: Number.MAX_SAFE_INTEGER,
    })),
    first_line: worst,
    execution_count: Number.MAX_SAFE_INTEGER,
    notebook: worst,
  }, {
    title: worst,
    countLine: worst,
    link: "https://example.com/?q=" + "&".repeat(900),
  });
  assertSafe(message);
  assert.deepEqual(message.blocks.length, 5);
});
