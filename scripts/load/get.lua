-- GET /products/{id} over the ids in the file named by PINV_IDS, picked at random.
local ids = {}
for line in io.lines(os.getenv("PINV_IDS")) do ids[#ids + 1] = line end
math.randomseed(os.time())
request = function()
  return wrk.format("GET", "/products/" .. ids[math.random(#ids)])
end
