// imagectl: the command-line client of the image templates API.
#include "client/imagectl/cli.h"

int main(int argc, char** argv) { return imagectl::Main(argc, argv); }
