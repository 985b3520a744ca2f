"""`tunelab ui`: a web page over a runs folder — list, watch, compare, launch / stop / resume, playground. A thin
shell over the library (the library never imports it); jobs are detached `tunelab train` processes, so the page
and this server can come and go without touching them."""
