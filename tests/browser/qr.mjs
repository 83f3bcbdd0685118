// Shows the enrolment's QR code (an SVG document, as `enrol_totp` answers it) in Debian's
// chromium, as a front end would, and reads it back. Run by tests/api/mfa.rs:
//
//   node qr.mjs <svg-file> <expected-otpauth-uri>
//       the SVG, put into a page as it is, is drawn by the browser at a visible size; the
//       pixels chromium renders, read by a QR decoder (jsqr), are the expected URI
//
// It fails (exit 1, reason on stderr) on a browser error, a request anywhere, or a picture
// that does not decode to the URI.
import { readFileSync } from "node:fs";
import jsQR from "jsqr";
import { finish, launch, watch } from "./chromium.mjs";

const [file, expected, ...rest] = process.argv.slice(2);
if (!file || !expected || rest.length > 0) {
  console.error("usage: node qr.mjs <svg-file> <expected-otpauth-uri>");
  process.exit(2);
}
const svg = readFileSync(file, "utf8");

const browser = await launch();
const problems = [];
try {
  const page = await browser.newPage();
  // about:blank's origin: the picture must need nothing from anywhere.
  watch(page, "http://no-requests.invalid", problems, { otherOrigin: (url) => url === "about:blank" });
  await page.setContent("<!doctype html><body style=\"margin:0\"><div id=\"qr\"></div></body>");
  // As a front end shows it: the markup, as it came (an <img> of it works the same way).
  await page.evaluate((markup) => {
    const doc = new DOMParser().parseFromString(markup, "image/svg+xml");
    document.getElementById("qr").appendChild(document.importNode(doc.documentElement, true));
  }, svg);
  const box = await page.locator("#qr svg").boundingBox();
  if (!box || box.width < 200 || box.height < 200) {
    problems.push(`the QR code is not shown at a scannable size: ${JSON.stringify(box)}`);
  }
  // The pixels chromium draws for the document, on a white canvas.
  const { width, height, pixels } = await page.evaluate(async (markup) => {
    const img = new Image();
    img.src = "data:image/svg+xml;base64," + btoa(markup);
    await img.decode();
    const canvas = document.createElement("canvas");
    canvas.width = img.naturalWidth * 2;
    canvas.height = img.naturalHeight * 2;
    const cx = canvas.getContext("2d");
    cx.fillStyle = "#fff";
    cx.fillRect(0, 0, canvas.width, canvas.height);
    cx.drawImage(img, 0, 0, canvas.width, canvas.height);
    const data = cx.getImageData(0, 0, canvas.width, canvas.height).data;
    return { width: canvas.width, height: canvas.height, pixels: Array.from(data) };
  }, svg);
  const decoded = jsQR(Uint8ClampedArray.from(pixels), width, height);
  if (!decoded) {
    problems.push(`no QR code found in the ${width}x${height} rendering`);
  } else if (decoded.data !== expected) {
    problems.push(`the QR code says ${decoded.data}, not ${expected}`);
  } else {
    console.log(`qr: chromium rendered ${width}x${height}, decoded to the otpauth URI`);
  }
} catch (error) {
  problems.push(error.stack ?? String(error));
} finally {
  await browser.close();
}
finish(problems);
